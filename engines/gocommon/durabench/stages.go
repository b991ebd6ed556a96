package durabench

// The stage bodies every Go engine runs (harness/workload.py's StepRunner in Go): a work step, one
// attempt of a call to the flaky API, the effect's statement, and the records workflow code
// writes (timers, signals, branches). Each engine wraps these in its own steps, activities,
// timers and transactions; the ledger records are those of docs/engines.md.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The flaky API's interface and the application database's table (docs/engines.md).
const (
	APIPath            = "/call"
	HeaderWorkflow     = "X-Durabench-Workflow"
	HeaderStage        = "X-Durabench-Stage"
	HeaderAttempt      = "X-Durabench-Attempt"
	HeaderWorker       = "X-Durabench-Worker"
	HeaderRetryAfterMs = "Retry-After-Ms"

	EffectsTable     = "durabench_effects"
	effectInsertNone = "INSERT INTO " + EffectsTable + " (wf, step, attempt, worker) VALUES ($1, $2, $3, $4)"
	effectInsertKey  = "INSERT INTO " + EffectsTable + " (wf, step, attempt, worker, idempotency_key) " +
		"VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING"
)

// EffectKey is the idempotency key of effect step of workflow wf: "<wf>#<step>".
func EffectKey(wf string, step int) string { return wf + "#" + strconv.Itoa(step) }

// StepRunner runs the stage bodies of one worker process and writes their ledger records.
type StepRunner struct {
	Ledger   *Ledger
	Workload Workload
	WorkerID string
	Stages   map[int]*Stage // every stage by step index
	apiURL   string
	client   *http.Client
}

// NewStepRunner opens the ledger of this worker.
func NewStepRunner(cfg *WorkerConfig) (*StepRunner, error) {
	ledger, err := OpenLedger(cfg.LedgerDir, cfg.WorkerID)
	if err != nil {
		return nil, err
	}
	stages := map[int]*Stage{}
	for _, s := range Walk(cfg.Workload.Program) {
		stages[s.Step] = s
	}
	// Keep-alive connections to the flaky API (allowed by its interface), enough for every
	// concurrent call of a busy worker; a request that times out closes its connection.
	transport := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024, IdleConnTimeout: 90 * time.Second}
	return &StepRunner{
		Ledger: ledger, Workload: cfg.Workload, WorkerID: cfg.WorkerID, Stages: stages,
		apiURL: strings.TrimRight(cfg.Endpoints["flaky_api"], "/") + APIPath,
		client: &http.Client{Transport: transport},
	}, nil
}

// Ready signals that this worker takes work.
func (r *StepRunner) Ready() { r.Ledger.Ready() }

// stage returns stage step, which must be of kind.
func (r *StepRunner) stage(step int, kind string) *Stage {
	s, ok := r.Stages[step]
	if !ok || s.Kind != kind {
		Fail(fmt.Errorf("step %d is not a %s stage of this worker's program", step, kind))
	}
	return s
}

// Run executes one work step: step_start (with the duration), sleep the stage's duration for
// (seed, wf, step) (DrawS), step_end; returns the stage's payload for the next stage. A cancelled
// ctx ends the sleep without a step_end (the step did not finish).
func (r *StepRunner) Run(ctx context.Context, wf string, step int, attempt *int) (string, error) {
	s := r.stage(step, KindWork)
	seconds := s.Duration.DrawS(r.Workload.Seed, wf, step)
	r.Ledger.Record("step_start", wf, step, Fields{"attempt": attempt, "duration_s": seconds})
	if seconds > 0 {
		timer := time.NewTimer(Seconds(seconds))
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return "", ctx.Err()
		}
	}
	r.Ledger.Step("step_end", wf, step, attempt)
	return strings.Repeat("x", s.PayloadBytes), nil
}

// CallFailed is a failed call attempt: any outcome but 200. Engines retry it under the stage's
// policy, waiting at least RetryAfter after a 429 where their retry mechanism allows.
type CallFailed struct {
	Status     any           // HTTP status (int), "timeout" or "error"
	RetryAfter time.Duration // from a 429's Retry-After-Ms (else Retry-After); 0 when absent
	Detail     string
}

func (e *CallFailed) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("flaky API answered %v: %s", e.Status, e.Detail)
	}
	return fmt.Sprintf("flaky API answered %v", e.Status)
}

// Call makes one attempt of call stage step: step_start, one POST to the flaky API that gives up
// after the stage's attempt_timeout_s (or when ctx ends), call_attempt, then step_end (200) or
// step_error. It returns the answer's body, or a *CallFailed.
func (r *StepRunner) Call(ctx context.Context, wf string, step int, attempt *int) (string, error) {
	s := r.stage(step, KindCall)
	sent := r.Ledger.Step("step_start", wf, step, attempt)
	status, retryAfter, body := r.attempt(ctx, wf, step, attempt, s.Retry.AttemptTimeout())
	var retryAfterS any
	if retryAfter > 0 {
		retryAfterS = retryAfter.Seconds()
	}
	r.Ledger.Record("call_attempt", wf, step, Fields{"attempt": attempt, "status": status,
		"retry_after_s": retryAfterS, "sent_ns": sent})
	if status != 200 {
		r.Ledger.Record("step_error", wf, step, Fields{"attempt": attempt, "error": fmt.Sprintf("status %v", status)})
		failed := &CallFailed{Status: status, RetryAfter: retryAfter}
		if _, isCode := status.(int); !isCode {
			failed.Detail = body
		}
		return "", failed
	}
	r.Ledger.Step("step_end", wf, step, attempt)
	return body, nil
}

// attempt is one HTTP request: (status or "timeout" / "error", Retry-After, body or error text).
func (r *StepRunner) attempt(ctx context.Context, wf string, step int, attempt *int, timeout time.Duration) (any, time.Duration, string) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.apiURL, http.NoBody)
	if err != nil {
		return "error", 0, err.Error()
	}
	req.Header.Set(HeaderWorkflow, wf)
	req.Header.Set(HeaderStage, strconv.Itoa(step))
	if attempt != nil {
		req.Header.Set(HeaderAttempt, strconv.Itoa(*attempt))
	} else {
		req.Header.Set(HeaderAttempt, "")
	}
	req.Header.Set(HeaderWorker, r.WorkerID)
	resp, err := r.client.Do(req)
	if err == nil {
		var data []byte
		data, err = io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err == nil {
			return resp.StatusCode, retryAfter(resp.Header), string(data)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "timeout", 0, err.Error()
	}
	return "error", 0, err.Error()
}

func retryAfter(h http.Header) time.Duration {
	if ms, err := strconv.ParseInt(h.Get(HeaderRetryAfterMs), 10, 64); err == nil && ms > 0 {
		return time.Duration(ms) * time.Millisecond
	}
	if s, err := strconv.ParseFloat(h.Get("Retry-After"), 64); err == nil && s > 0 {
		return Seconds(s)
	}
	return 0
}

// EffectStatement is the insert of one application of effect stage step (pgx placeholders) and its
// arguments: a plain insert (idempotency none) or insert-if-absent by EffectKey (key).
func (r *StepRunner) EffectStatement(wf string, step int, attempt *int) (string, []any) {
	s := r.stage(step, KindEffect)
	args := []any{wf, step, attempt, r.WorkerID}
	if s.Idempotency == "key" {
		return effectInsertKey, append(args, EffectKey(wf, step))
	}
	return effectInsertNone, args
}

// EffectStarted records the start of one execution of effect stage step.
func (r *StepRunner) EffectStarted(wf string, step int, attempt *int) {
	r.Ledger.Step("step_start", wf, step, attempt)
}

// EffectApplied records effect_applied once the effect's insert committed; inserted is false when
// the idempotency key deduplicated it.
func (r *StepRunner) EffectApplied(wf string, step int, attempt *int, inserted bool) {
	r.Ledger.Record("effect_applied", wf, step, Fields{"attempt": attempt, "inserted": inserted,
		"idempotency": r.stage(step, KindEffect).Idempotency})
}

// EffectRest is the effect step's time after its insert (the stage's duration_s), so a crash can land
// inside the step: it returns early (ctx's error) when ctx ends.
func (r *StepRunner) EffectRest(ctx context.Context, step int) error {
	d := r.stage(step, KindEffect).Sleep()
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TimerSet is written before a sleep stage's timer is armed; TimerFired when the workflow resumes.
func (r *StepRunner) TimerSet(wf string, step int, dueNs int64) {
	r.Ledger.Record("timer_set", wf, step, Fields{"due_ns": dueNs})
}

// TimerFired's dueNs may be 0: not known to this execution (the record is then null).
func (r *StepRunner) TimerFired(wf string, step int, dueNs int64) {
	var due any
	if dueNs != 0 {
		due = dueNs
	}
	r.Ledger.Record("timer_fired", wf, step, Fields{"due_ns": due})
}

// SignalWait, SignalReceived and SignalTimeout are a wait_signal stage's records.
func (r *StepRunner) SignalWait(wf string, step int) {
	r.Ledger.Record("signal_wait", wf, step, Fields{"signal": r.stage(step, KindWaitSignal).Signal})
}

func (r *StepRunner) SignalReceived(wf string, step int, payload string) {
	r.Ledger.Record("signal_received", wf, step, Fields{"signal": r.stage(step, KindWaitSignal).Signal,
		"payload": payload})
}

func (r *StepRunner) SignalTimeout(wf string, step int) {
	s := r.stage(step, KindWaitSignal)
	r.Ledger.Record("signal_timeout", wf, step, Fields{"signal": s.Signal, "on_timeout": s.OnTimeout})
}

// BranchStart and BranchEnd surround branch b of parallel stage step; Join follows the fan-in.
func (r *StepRunner) BranchStart(wf string, step, branch int) {
	r.Ledger.Record("branch_start", wf, step, Fields{"branch": branch})
}

func (r *StepRunner) BranchEnd(wf string, step, branch int) {
	r.Ledger.Record("branch_end", wf, step, Fields{"branch": branch})
}

func (r *StepRunner) Join(wf string, step int) { r.Ledger.Record("join", wf, step, nil) }
