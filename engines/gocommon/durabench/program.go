package durabench

// The compiled workflow program every worker receives (harness/program.py, docs/engines.md
// "Workflow programs"): the stage objects, distributions and retry policies, read from the worker
// config; and the shared arithmetic (drawing a duration, a policy's backoff).

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// Stage kinds (harness/program.py STAGE_KINDS).
const (
	KindWork       = "work"
	KindCall       = "call"
	KindParallel   = "parallel"
	KindSleep      = "sleep"
	KindWaitSignal = "wait_signal"
	KindEffect     = "effect"
)

// z99 is the standard normal's 99th percentile: lognormal sigma = ln(p99/p50) / z99.
const z99 = 2.3263478740408408

// Dist is a duration distribution: {"dist": "fixed", "value_s"}, {"dist": "uniform", "min_s",
// "max_s"} or {"dist": "lognormal", "p50_s", "p99_s"}.
type Dist struct {
	Dist   string  `json:"dist"`
	ValueS float64 `json:"value_s"`
	MinS   float64 `json:"min_s"`
	MaxS   float64 `json:"max_s"`
	P50S   float64 `json:"p50_s"`
	P99S   float64 `json:"p99_s"`
}

// DrawS draws one duration in seconds, by the rule every language shares (harness/program.py
// draw_s): fixed value; uniform in [min, max]; lognormal exp(N(ln p50, ln(p99/p50) / 2.3263)).
func (d *Dist) DrawS() float64 {
	switch d.Dist {
	case "fixed":
		return d.ValueS
	case "uniform":
		return d.MinS + rand.Float64()*(d.MaxS-d.MinS)
	case "lognormal":
		sigma := 0.0
		if d.P99S > d.P50S {
			sigma = math.Log(d.P99S/d.P50S) / z99
		}
		return math.Exp(math.Log(d.P50S) + sigma*rand.NormFloat64())
	}
	Fail(fmt.Errorf("unknown distribution %q", d.Dist))
	return 0
}

// Retry is a call stage's retry policy (docs/scenarios.md, "call.retry").
type Retry struct {
	MaxAttempts     int     `json:"max_attempts"`
	InitialBackoffS float64 `json:"initial_backoff_s"`
	Multiplier      float64 `json:"multiplier"`
	MaxBackoffS     float64 `json:"max_backoff_s"`
	AttemptTimeoutS float64 `json:"attempt_timeout_s"`
}

// Seconds converts seconds to a Duration.
func Seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// InitialBackoff, MaxBackoff and AttemptTimeout are the policy's durations.
func (r *Retry) InitialBackoff() time.Duration { return Seconds(r.InitialBackoffS) }
func (r *Retry) MaxBackoff() time.Duration     { return Seconds(r.MaxBackoffS) }
func (r *Retry) AttemptTimeout() time.Duration { return Seconds(r.AttemptTimeoutS) }

// Backoff is the policy's delay before attempt failedAttempts+1: initial * multiplier^(n-1),
// capped at the maximum (harness/program.py backoff_s).
func (r *Retry) Backoff(failedAttempts int) time.Duration {
	n := max(0, failedAttempts-1)
	return min(Seconds(r.InitialBackoffS*math.Pow(r.Multiplier, float64(n))), r.MaxBackoff())
}

// Stage is one compiled stage; which fields are set depends on Kind.
type Stage struct {
	Kind string `json:"kind"`
	Step int    `json:"step"`
	// work
	Duration     *Dist `json:"duration"`
	PayloadBytes int   `json:"payload_bytes"`
	// call
	Retry *Retry `json:"retry"`
	// parallel: each branch a list of stages
	Branches [][]Stage `json:"branches"`
	// sleep: the timer; effect: the step's time after its insert
	DurationS float64 `json:"duration_s"`
	// wait_signal
	Signal    string  `json:"signal"`
	Delay     *Dist   `json:"delay"`
	TimeoutS  float64 `json:"timeout_s"`
	OnTimeout string  `json:"on_timeout"`
	// effect
	Idempotency string `json:"idempotency"`
}

// Sleep is a sleep stage's duration (an effect stage's time after its insert); Timeout a
// wait_signal stage's.
func (s *Stage) Sleep() time.Duration   { return Seconds(s.DurationS) }
func (s *Stage) Timeout() time.Duration { return Seconds(s.TimeoutS) }

// chain is the shorthand's program: Steps work stages of fixed StepDurationS.
func chain(w Workload) []Stage {
	out := make([]Stage, w.Steps)
	for i := range out {
		out[i] = Stage{Kind: KindWork, Step: i, Duration: &Dist{Dist: "fixed", ValueS: w.StepDurationS},
			PayloadBytes: w.PayloadBytes}
	}
	return out
}

// validate refuses a program this worker would misread (a harness newer than the worker).
func validate(program []Stage) error {
	for _, s := range Walk(program) {
		bad := ""
		switch s.Kind {
		case KindWork:
			if s.Duration == nil {
				bad = "no duration"
			}
		case KindCall:
			if s.Retry == nil || s.Retry.MaxAttempts < 1 {
				bad = "no retry policy"
			}
		case KindParallel:
			if len(s.Branches) == 0 {
				bad = "no branches"
			}
		case KindSleep:
			if s.DurationS <= 0 {
				bad = "no duration_s"
			}
		case KindWaitSignal:
			if s.Signal == "" || (s.OnTimeout != "fail" && s.OnTimeout != "continue") {
				bad = "no signal or on_timeout"
			}
		case KindEffect:
			if s.Idempotency != "none" && s.Idempotency != "key" {
				bad = fmt.Sprintf("idempotency %q", s.Idempotency)
			}
		default:
			bad = "unknown kind"
		}
		if bad != "" {
			return fmt.Errorf("stage %d (%s): %s", s.Step, s.Kind, bad)
		}
	}
	return nil
}

// Walk lists every stage depth-first (a parallel stage, then each branch's stages).
func Walk(program []Stage) []*Stage {
	var out []*Stage
	for i := range program {
		out = append(out, &program[i])
		for _, branch := range program[i].Branches {
			out = append(out, Walk(branch)...)
		}
	}
	return out
}

// Kinds is the set of stage kinds of a program.
func Kinds(program []Stage) map[string]bool {
	out := map[string]bool{}
	for _, s := range Walk(program) {
		out[s.Kind] = true
	}
	return out
}
