// Package durabench is the durabench worker boundary in Go: the same as harness/contract.py,
// harness/ledger.py and harness/workload.py (docs/engines.md, "The worker boundary").
//
// It is a library shared by the Go adapters (engines/dbos_go, engines/temporal_go), not an
// adapter: each adapter's go.mod requires it and points at this folder with a replace directive.
// Standard library only, so it adds nothing to the adapters' go.sum.
package durabench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ConfigEnv names the environment variable holding the path of the worker's JSON config.
const ConfigEnv = "DURABENCH_WORKER_CONFIG"

// Workload is harness.contract.Workload: Program is the compiled list of stages (program.go); a
// config without one (written before programs) means the shorthand's chain of work stages.
type Workload struct {
	Steps         int     `json:"steps"`
	StepDurationS float64 `json:"step_duration_s"`
	PayloadBytes  int     `json:"payload_bytes"`
	Program       []Stage `json:"program"`
	Seed          int64   `json:"seed"` // the scenario's: every drawn duration is a function of (Seed, wf, step)
}

// WorkerConfig is harness.contract.WorkerConfig.
type WorkerConfig struct {
	Engine      string            `json:"engine"`
	RunID       string            `json:"run_id"`
	WorkerID    string            `json:"worker_id"`
	WorkerIndex int               `json:"worker_index"`
	Endpoints   map[string]string `json:"endpoints"`
	Workload    Workload          `json:"workload"`
	Settings    Settings          `json:"settings"`
	LedgerDir   string            `json:"ledger_dir"`
}

// LoadConfig reads the config named by $DURABENCH_WORKER_CONFIG.
func LoadConfig() (*WorkerConfig, error) {
	path := os.Getenv(ConfigEnv)
	if path == "" {
		return nil, fmt.Errorf("%s is not set", ConfigEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg WorkerConfig
	if err := json.Unmarshal(data, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cfg.Workload.Program) == 0 {
		cfg.Workload.Program = chain(cfg.Workload)
	}
	if err := validate(cfg.Workload.Program); err != nil {
		return nil, fmt.Errorf("%s: workload.program: %w", path, err)
	}
	return &cfg, nil
}

// Settings are the adapter's merged settings; a missing or mistyped key is a fatal error
// (every knob is a recorded setting, never a hidden default).
type Settings map[string]any

func (s Settings) get(key string) any {
	v, ok := s[key]
	if !ok {
		Fail(fmt.Errorf("setting %q is missing from the worker config", key))
	}
	return v
}

// Float returns a numeric setting.
func (s Settings) Float(key string) float64 {
	v, ok := s.get(key).(float64)
	if !ok {
		Fail(fmt.Errorf("setting %q is not a number: %v", key, s[key]))
	}
	return v
}

// Int returns an integral setting.
func (s Settings) Int(key string) int {
	v := s.Float(key)
	if v != float64(int(v)) {
		Fail(fmt.Errorf("setting %q is not an integer: %v", key, v))
	}
	return int(v)
}

// Duration returns a setting given in seconds.
func (s Settings) Duration(key string) time.Duration {
	return time.Duration(s.Float(key) * float64(time.Second))
}

// String returns a string setting.
func (s Settings) String(key string) string {
	v, ok := s.get(key).(string)
	if !ok {
		Fail(fmt.Errorf("setting %q is not a string: %v", key, s[key]))
	}
	return v
}

// Bool returns a boolean setting.
func (s Settings) Bool(key string) bool {
	v, ok := s.get(key).(bool)
	if !ok {
		Fail(fmt.Errorf("setting %q is not a boolean: %v", key, s[key]))
	}
	return v
}

// Fail reports err on stderr and exits with status 2 (a worker that cannot run).
func Fail(err error) {
	fmt.Fprintf(os.Stderr, "durabench worker: %v\n", err)
	os.Exit(2)
}

// Ledger appends records to <ledger_dir>/<src with ':' -> '-'>.<pid>.jsonl, opened with
// O_APPEND; every record is one JSON line written with one write(2) and no buffering, so a
// SIGKILL never loses a record already written.
type Ledger struct {
	f   *os.File
	src string
	pid int
}

// OpenLedger opens this process's ledger file.
func OpenLedger(dir, src string) (*Ledger, error) {
	pid := os.Getpid()
	name := strings.ReplaceAll(src, ":", "-") + "." + strconv.Itoa(pid) + ".jsonl"
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &Ledger{f: f, src: src, pid: pid}, nil
}

type readyRecord struct {
	Ev  string `json:"ev"`
	Ns  int64  `json:"ns"`
	Src string `json:"src"`
	Pid int    `json:"pid"`
}

func (l *Ledger) write(record any) {
	line, err := json.Marshal(record)
	if err != nil {
		Fail(err)
	}
	// *os.File.Write on a regular file is one write(2) for a line this size; O_APPEND places it
	// atomically at the end even with several goroutines writing.
	if _, err := l.f.Write(append(line, '\n')); err != nil {
		Fail(fmt.Errorf("ledger write: %w", err))
	}
}

// Ready records that this worker takes work.
func (l *Ledger) Ready() {
	l.write(readyRecord{Ev: "ready", Ns: time.Now().UnixNano(), Src: l.src, Pid: l.pid})
}

// Fields are a record's fields beyond ev, ns, src, pid, wf and step (docs/engines.md, "Ledger
// records of programs").
type Fields map[string]any

// Record appends one record of workflow wf's stage step and returns its time (ns).
func (l *Ledger) Record(ev, wf string, step int, fields Fields) int64 {
	ns := time.Now().UnixNano()
	record := make(map[string]any, len(fields)+6)
	for k, v := range fields {
		record[k] = v
	}
	record["ev"], record["ns"], record["src"], record["pid"], record["wf"], record["step"] = ev, ns, l.src, l.pid, wf, step
	l.write(record)
	return ns
}

// Step records a step_start or step_end (attempt nil: the engine has no attempt counter).
func (l *Ledger) Step(ev, wf string, step int, attempt *int) int64 {
	return l.Record(ev, wf, step, Fields{"attempt": attempt})
}
