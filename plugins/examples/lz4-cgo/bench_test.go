package main

import (
	"context"
	"testing"

	"github.com/overlaybd-go/overlaybd/plugins"
	"github.com/overlaybd-go/overlaybd/plugins/examples/lz4-cgo/liblz4"
	"github.com/overlaybd-go/overlaybd/plugins/internal/plugintest"
)

// BenchmarkZFileRatios measures ZFile reads of 64 KiB-block files through
// the plugin (batched, and one block per call) against liblz4 in process
// (see plugintest.ZFileReadRatios).
//
//	go test -run '^$' -bench ZFileRatios -benchtime 100x -count 5 ./plugins/examples/lz4-cgo/
func BenchmarkZFileRatios(b *testing.B) {
	p, err := plugins.Start(context.Background(), plugins.Config{Path: lz4Bin, Algorithms: []string{"lz4"}}, plugins.WithLogger(plugintest.Quiet()))
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	shm, err := p.Codec("lz4")
	if err != nil {
		b.Fatal(err)
	}
	plugintest.ZFileReadRatios(b, "lz4", liblz4.Codec{}, shm)
}
