package durabench

// The compiled workflow program every worker receives (harness/program.py, docs/engines.md
// "Workflow programs"): the stage objects, distributions and retry policies, read from the worker
// config; and the shared arithmetic (drawing a duration, a policy's backoff).

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"regexp"
	"strings"
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

// DrawS is the stage's duration in seconds for step of workflow wf, by the rule every language
// shares (harness/program.py step_draw_s, docs/engines.md "Drawn durations"): a pure function of
// (seed, wf, step), so every engine gets the same duration for the same workflow and a re-executed
// step lasts as long as its first execution.
func (d *Dist) DrawS(seed int64, wf string, step int) float64 {
	return d.QuantileS(DrawU(seed, wf, step))
}

// QuantileS is the duration in seconds at quantile u (0 < u < 1) (harness/program.py quantile_s):
// fixed value; uniform min + u*(max-min); lognormal exp(ln p50 + sigma*z), sigma = ln(p99/p50) /
// 2.3263, z the standard normal's quantile of u.
func (d *Dist) QuantileS(u float64) float64 {
	switch d.Dist {
	case "fixed":
		return d.ValueS
	case "uniform":
		return d.MinS + u*(d.MaxS-d.MinS)
	case "lognormal":
		sigma := 0.0
		if d.P99S > d.P50S {
			sigma = math.Log(d.P99S/d.P50S) / z99
		}
		return math.Exp(math.Log(d.P50S) + sigma*NormalQuantile(u))
	}
	Fail(fmt.Errorf("unknown distribution %q", d.Dist))
	return 0
}

// A draw's u is clamped into [uMin, uMax] (harness/program.py U_MIN, U_MAX).
const (
	uMin = 0x1p-53
	uMax = 1 - 0x1p-53
)

var seqSuffix = regexp.MustCompile(`-([0-9]+)$`)

// DrawKey is what a step's draw hashes (harness/program.py draw_key): "<seed>:<seq>:<step>", seq the
// workflow id's numeric suffix without leading zeros (the driver's <engine>-<run>-<seq:07d>), or the
// whole id when it has none.
func DrawKey(seed int64, wf string, step int) string {
	seq := wf
	if m := seqSuffix.FindStringSubmatch(wf); m != nil {
		seq = strings.TrimLeft(m[1], "0")
		if seq == "" {
			seq = "0"
		}
	}
	return fmt.Sprintf("%d:%s:%d", seed, seq, step)
}

// DrawU is the uniform variate of a step's draw (harness/program.py draw_u): the first 8 bytes
// (big-endian) of sha256(DrawKey) / 2^64, clamped into [uMin, uMax].
func DrawU(seed int64, wf string, step int) float64 {
	sum := sha256.Sum256([]byte(DrawKey(seed, wf, step)))
	u := float64(binary.BigEndian.Uint64(sum[:8])) / 0x1p64
	return min(max(u, uMin), uMax)
}

// NormalQuantile is the standard normal's inverse CDF at p (0 < p < 1): Wichura's algorithm AS241
// (Applied Statistics 37(3), 1988), the one Python's statistics.NormalDist().inv_cdf computes, with
// its coefficients and order of operations, so both languages draw the same durations.
func NormalQuantile(p float64) float64 {
	q := p - 0.5
	var num, den float64
	if math.Abs(q) <= 0.425 {
		r := 0.180625 - q*q
		num = (((((((2.50908_09287_30122_6727e+3*r+
			3.34305_75583_58812_8105e+4)*r+
			6.72657_70927_00870_0853e+4)*r+
			4.59219_53931_54987_1457e+4)*r+
			1.37316_93765_50946_1125e+4)*r+
			1.97159_09503_06551_4427e+3)*r+
			1.33141_66789_17843_7745e+2)*r +
			3.38713_28727_96366_6080e+0) * q
		den = (((((((5.22649_52788_52854_5610e+3*r+
			2.87290_85735_72194_2674e+4)*r+
			3.93078_95800_09271_0610e+4)*r+
			2.12137_94301_58659_5867e+4)*r+
			5.39419_60214_24751_1077e+3)*r+
			6.87187_00749_20579_0830e+2)*r+
			4.23133_30701_60091_1252e+1)*r +
			1.0)
		return num / den
	}
	r := p
	if q > 0 {
		r = 1.0 - p
	}
	r = math.Sqrt(-math.Log(r))
	if r <= 5.0 {
		r -= 1.6
		num = (((((((7.74545_01427_83414_07640e-4*r+
			2.27238_44989_26918_45833e-2)*r+
			2.41780_72517_74506_11770e-1)*r+
			1.27045_82524_52368_38258e+0)*r+
			3.64784_83247_63204_60504e+0)*r+
			5.76949_72214_60691_40550e+0)*r+
			4.63033_78461_56545_29590e+0)*r +
			1.42343_71107_49683_57734e+0)
		den = (((((((1.05075_00716_44416_84324e-9*r+
			5.47593_80849_95344_94600e-4)*r+
			1.51986_66563_61645_71966e-2)*r+
			1.48103_97642_74800_74590e-1)*r+
			6.89767_33498_51000_04550e-1)*r+
			1.67638_48301_83803_84940e+0)*r+
			2.05319_16266_37758_82187e+0)*r +
			1.0)
	} else {
		r -= 5.0
		num = (((((((2.01033_43992_92288_13265e-7*r+
			2.71155_55687_43487_57815e-5)*r+
			1.24266_09473_88078_43860e-3)*r+
			2.65321_89526_57612_30930e-2)*r+
			2.96560_57182_85048_91230e-1)*r+
			1.78482_65399_17291_33580e+0)*r+
			5.46378_49111_64114_36990e+0)*r +
			6.65790_46435_01103_77720e+0)
		den = (((((((2.04426_31033_89939_78564e-15*r+
			1.42151_17583_16445_88870e-7)*r+
			1.84631_83175_10054_68180e-5)*r+
			7.86869_13114_56132_59100e-4)*r+
			1.48753_61290_85061_48525e-2)*r+
			1.36929_88092_27358_05310e-1)*r+
			5.99832_20655_58879_37690e-1)*r +
			1.0)
	}
	x := num / den
	if q < 0 {
		x = -x
	}
	return x
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
