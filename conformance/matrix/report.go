package matrix

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"
)

// Summary counts the results by status.
type Summary map[Status]int

// Summarize counts rs by status.
func Summarize(rs []Result) Summary {
	s := Summary{}
	for _, r := range rs {
		s[r.Status]++
	}
	return s
}

// WriteTable writes the results as a table: one row per cell run (pass or
// fail, with its time), then the declared cells grouped by reason.
func WriteTable(w io.Writer, rs []Result, markdown bool) error {
	if markdown {
		fmt.Fprintln(w, "| engine | codec | crc | envelope | cache | layer | upper | frontend | status | time |")
		fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if !markdown {
		fmt.Fprintln(tw, "ENGINE\tCODEC\tCRC\tENVELOPE\tCACHE\tLAYER\tUPPER\tFRONTEND\tSTATUS\tTIME")
	}
	reasons := map[string]int{}
	var order []string
	for _, r := range rs {
		if r.Status != Pass && r.Status != Fail {
			if _, ok := reasons[string(r.Status)+": "+r.Reason]; !ok {
				order = append(order, string(r.Status)+": "+r.Reason)
			}
			reasons[string(r.Status)+": "+r.Reason]++
			continue
		}
		c := r.Cell
		row := []any{c.Engine, c.Codec, c.CRC, c.Envelope, c.Cache, c.Layer, c.Upper, c.Frontend, r.Status, r.Duration.Round(time.Millisecond)}
		if markdown {
			fmt.Fprintf(w, "| %v | %v | %v | %v | %v | %v | %v | %v | %v | %v |\n", row...)
		} else {
			fmt.Fprintf(tw, "%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\t%v\n", row...)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	for _, k := range order {
		fmt.Fprintf(w, "- %d cells %s\n", reasons[k], k)
	}
	s := Summarize(rs)
	_, err := fmt.Fprintf(w, "\n%d cells: %d pass, %d fail, %d declared-impossible, %d not-run\n",
		len(rs), s[Pass], s[Fail], s[Impossible], s[NotRun])
	return err
}

// Report is the JSON report of a run.
type Report struct {
	Seed    int64    `json:"seed"`
	Command []string `json:"command"`
	Results []Result `json:"results"`
	Summary Summary  `json:"summary"`
}

// WriteReport writes the JSON report to path.
func WriteReport(path string, seed int64, rs []Result) error {
	b, err := json.MarshalIndent(Report{Seed: seed, Command: os.Args, Results: rs, Summary: Summarize(rs)}, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
