// Command faultplugin is a codec plugin for the host's fault tests: it
// serves lz4 and zstd with the project's pure-Go codecs and misbehaves on
// command. Before every batch it reads the file named by -control, whose
// content selects the behaviour:
//
//	ok          serve correctly
//	crash       exit in the middle of the batch
//	crash-once  write "ok" to the control file, then crash
//	hang        never answer
//	short-msg   truncate the reply message by one byte
//	long-msg    append bytes to the reply message
//	long        report more bytes than the destination holds
//	short       report one byte fewer than produced (checksum kept)
//	corrupt     flip a byte of the first block's output after the checksum
//	badsum      flip a bit of the first block's checksum
//	wrongseq    answer with another batch's sequence number
//
// -protocol N announces go-plugin protocol version N (handshake tests).
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/overlaybd-go/overlaybd/codecs/lz4"
	"github.com/overlaybd-go/overlaybd/codecs/zstd"
	"github.com/overlaybd-go/overlaybd/core"
	"github.com/overlaybd-go/overlaybd/plugins/internal/pluginserver"
	"github.com/overlaybd-go/overlaybd/plugins/internal/wire"
)

func main() {
	control := flag.String("control", "", "file whose content selects the behaviour")
	protocol := flag.Int("protocol", 0, "go-plugin protocol version to announce")
	flag.Parse()
	mode := func() string {
		if *control == "" {
			return "ok"
		}
		b, _ := os.ReadFile(*control)
		return strings.TrimSpace(string(b))
	}
	z, err := zstd.Go()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	le := binary.LittleEndian
	opts := pluginserver.Options{
		Version:         "faultplugin 1",
		ProtocolVersion: *protocol,
		BeforeBlock: func(i, count int) {
			switch m := mode(); {
			case m == "hang" && i == 0:
				select {}
			case (m == "crash" || m == "crash-once") && i == count/2:
				if m == "crash-once" {
					_ = os.WriteFile(*control, []byte("ok"), 0o600)
				}
				os.Exit(3)
			}
		},
		Tamper: func(msg, reply, lane []byte) []byte {
			if len(reply) < wire.HeaderSize+wire.ResultSize {
				return reply
			}
			first := reply[wire.HeaderSize:]
			switch mode() {
			case "short-msg":
				return reply[:len(reply)-1]
			case "long-msg":
				return append(reply, make([]byte, wire.ResultSize)...)
			case "long":
				le.PutUint32(first[4:], le.Uint32(first[4:])+1<<20)
			case "short":
				if n := le.Uint32(first[4:]); n > 0 {
					le.PutUint32(first[4:], n-1)
				}
			case "corrupt":
				d := wire.ParseDesc(msg, 0)
				if le.Uint32(first[4:]) > 0 {
					lane[d.DstOff] ^= 0x5a
				}
			case "badsum":
				first[8] ^= 1
			case "wrongseq":
				le.PutUint64(reply[8:], le.Uint64(reply[8:])+7)
			}
			return reply
		},
	}
	if err := pluginserver.Run([]core.Codec{lz4.Go(), z}, opts); err != nil {
		fmt.Fprintf(os.Stderr, "faultplugin: %v\n", err)
		os.Exit(1)
	}
}
