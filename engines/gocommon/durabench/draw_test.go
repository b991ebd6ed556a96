package durabench

// The cross-language check of drawn durations: tests/unit/test_draws.py writes a table of Python's
// draws (harness/program.py) to $DURABENCH_DRAWS_TABLE and runs this test, which must compute the
// same keys, the same u bit for bit and the same durations to 1e-9 relative.

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

type drawRow struct {
	Seed  int64   `json:"seed"`
	WF    string  `json:"wf"`
	Step  int     `json:"step"`
	Dist  Dist    `json:"dist"`
	Key   string  `json:"key"`
	U     float64 `json:"u"`
	WantS float64 `json:"s"`
}

type quantileRow struct {
	P     float64 `json:"p"`
	WantZ float64 `json:"z"`
}

type drawTable struct {
	Draws     []drawRow     `json:"draws"`
	Quantiles []quantileRow `json:"quantiles"`
}

// relDiff is |got - want| relative to the larger magnitude (0 when equal).
func relDiff(got, want float64) float64 {
	if got == want {
		return 0
	}
	return math.Abs(got-want) / math.Max(math.Abs(got), math.Abs(want))
}

func TestDrawsMatchPython(t *testing.T) {
	path := os.Getenv("DURABENCH_DRAWS_TABLE")
	if path == "" {
		t.Skip("DURABENCH_DRAWS_TABLE is not set: tests/unit/test_draws.py writes Python's draws there and runs this test")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var table drawTable
	if err := json.Unmarshal(data, &table); err != nil {
		t.Fatal(err)
	}
	if len(table.Draws) == 0 || len(table.Quantiles) == 0 {
		t.Fatalf("%s: an empty table checks nothing", path)
	}
	worst := 0.0
	for _, row := range table.Draws {
		if key := DrawKey(row.Seed, row.WF, row.Step); key != row.Key {
			t.Errorf("DrawKey(%d, %q, %d) = %q, Python %q", row.Seed, row.WF, row.Step, key, row.Key)
		}
		if u := DrawU(row.Seed, row.WF, row.Step); u != row.U {
			t.Errorf("DrawU(%d, %q, %d) = %.17g, Python %.17g", row.Seed, row.WF, row.Step, u, row.U)
		}
		s := row.Dist.DrawS(row.Seed, row.WF, row.Step)
		worst = max(worst, relDiff(s, row.WantS))
		if relDiff(s, row.WantS) > 1e-9 {
			t.Errorf("DrawS %+v (%d, %q, %d) = %.17g s, Python %.17g s", row.Dist, row.Seed, row.WF, row.Step, s, row.WantS)
		}
	}
	for _, row := range table.Quantiles {
		z := NormalQuantile(row.P)
		worst = max(worst, relDiff(z, row.WantZ))
		if relDiff(z, row.WantZ) > 1e-9 {
			t.Errorf("NormalQuantile(%.17g) = %.17g, Python %.17g", row.P, z, row.WantZ)
		}
	}
	if !t.Failed() {
		t.Logf("%d draws and %d quantiles equal Python's (largest relative difference %.3g)",
			len(table.Draws), len(table.Quantiles), worst)
	}
}
