package main

// The workflow program in the Temporal Go SDK's idiom (docs/engines.md, "Workflow programs";
// README.md here), interpreted by workflow code as Temporal's DSL samples do:
//
//	work         an activity (a local activity with local_activities), the plan's timeouts and retries
//	call         an activity per attempt under the stage's RetryPolicy; a 429 returns an
//	             ApplicationError whose NextRetryDelay is at least its Retry-After
//	parallel     one workflow.Go coroutine per branch, joined with a workflow.WaitGroup
//	sleep        workflow.Sleep: a server-side durable timer
//	wait_signal  workflow.GetSignalChannel in a Selector against a workflow.NewTimer for the timeout
//	effect       an activity that inserts into the application database (plain, or insert-if-absent)
//
// Ledger records written by workflow code (timers, signals, branches) are written only when the
// code is not replaying (workflow.IsReplaying), so a replay after a crash writes nothing twice.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/durabench/durabench/engines/gocommon/durabench"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

const (
	// A call attempt's StartToCloseTimeout is the client's attempt timeout plus this margin, so the
	// activity's own HTTP timeout fires first and reports the attempt (as engines/temporal does).
	callTimeoutMargin = time.Second
	callActivity      = "durabench_call"
	effectActivity    = "durabench_effect"
	callErrorType     = "CallFailed" // the ApplicationError type of a failed call attempt
)

// openApp connects to the application database when the program has an effect stage (else nil):
// a pgx pool of settings.app_db_pool_size connections.
func openApp(cfg *durabench.WorkerConfig) (*pgxpool.Pool, error) {
	if !durabench.Kinds(cfg.Workload.Program)[durabench.KindEffect] {
		return nil, nil
	}
	raw, ok := cfg.Endpoints["app_db"]
	if !ok {
		return nil, errors.New("the program has an effect stage but the config has no app_db endpoint")
	}
	pc, err := pgxpool.ParseConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("app_db: %w", err)
	}
	pc.MaxConns = int32(cfg.Settings.Int("app_db_pool_size"))
	return pgxpool.NewWithConfig(context.Background(), pc)
}

// interpreter runs the worker's program (every worker of a run has the same one, from its config).
type interpreter struct {
	runner  *durabench.StepRunner
	program []durabench.Stage
}

// Workflow is DurabenchWorkflow: the program's stages in order (the workflow input's, as in
// Temporal's DSL samples; the worker config's for a client that sends none); returns the last work
// payload.
func (in *interpreter) Workflow(ctx workflow.Context, plan Plan) (string, error) {
	program := plan.Program
	if len(program) == 0 {
		program = in.program
	}
	return in.run(ctx, workflow.GetInfo(ctx).WorkflowExecution.ID, plan, program)
}

func (in *interpreter) record(ctx workflow.Context, write func()) {
	if !workflow.IsReplaying(ctx) {
		write()
	}
}

func (in *interpreter) run(ctx workflow.Context, wf string, plan Plan, stages []durabench.Stage) (string, error) {
	payload := ""
	for i := range stages {
		s := &stages[i]
		var err error
		switch s.Kind {
		case durabench.KindWork:
			err = execute(stepCtx(ctx, plan), plan.Local, stepActivity, &payload, s.Step, payload)
		case durabench.KindCall:
			var body string
			err = execute(callCtx(ctx, plan, s.Retry), plan.Local, callActivity, &body, s.Step)
		case durabench.KindEffect:
			var inserted bool
			err = execute(stepCtx(ctx, plan), plan.Local, effectActivity, &inserted, s.Step)
		case durabench.KindSleep:
			err = in.sleep(ctx, wf, s)
		case durabench.KindWaitSignal:
			err = in.waitSignal(ctx, wf, s)
		case durabench.KindParallel:
			err = in.parallel(ctx, wf, plan, s)
		default:
			err = fmt.Errorf("stage %d: unknown kind %q", s.Step, s.Kind)
		}
		if err != nil {
			return "", err
		}
	}
	return payload, nil
}

// stepCtx carries the plan's activity options (work and effect stages: the run's settings).
func stepCtx(ctx workflow.Context, plan Plan) workflow.Context {
	retry := &temporal.RetryPolicy{
		InitialInterval:    seconds(plan.RetryInitialIntervalS),
		BackoffCoefficient: plan.RetryBackoffCoefficient,
		MaximumInterval:    seconds(plan.RetryMaximumIntervalS),
		MaximumAttempts:    plan.RetryMaximumAttempts,
	}
	return withOptions(ctx, plan, seconds(plan.StartToCloseS), retry)
}

// callCtx maps a call stage's policy onto Temporal's: StartToCloseTimeout is the per-attempt
// timeout (plus callTimeoutMargin), and the RetryPolicy is the stage's (initial interval,
// coefficient, maximum interval, maximum attempts).
func callCtx(ctx workflow.Context, plan Plan, r *durabench.Retry) workflow.Context {
	retry := &temporal.RetryPolicy{
		InitialInterval:    r.InitialBackoff(),
		BackoffCoefficient: r.Multiplier,
		MaximumInterval:    r.MaxBackoff(),
		MaximumAttempts:    int32(r.MaxAttempts),
	}
	return withOptions(ctx, plan, r.AttemptTimeout()+callTimeoutMargin, retry)
}

// withOptions sets a step's options. A local activity also gets the plan's ScheduleToCloseTimeout:
// the Go SDK defaults it to StartToCloseTimeout (internal_activity.go:
// getValidatedLocalActivityOptions), which would end all retries once one attempt's timeout has
// passed; a regular activity (and a Python SDK local activity) has no overall limit.
func withOptions(ctx workflow.Context, plan Plan, startToClose time.Duration, retry *temporal.RetryPolicy) workflow.Context {
	if plan.Local {
		return workflow.WithLocalActivityOptions(ctx, workflow.LocalActivityOptions{
			ScheduleToCloseTimeout: seconds(plan.LocalScheduleToCloseS), StartToCloseTimeout: startToClose,
			RetryPolicy: retry,
		})
	}
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: startToClose, RetryPolicy: retry,
	})
}

func execute(ctx workflow.Context, local bool, name string, out any, args ...any) error {
	if local {
		return workflow.ExecuteLocalActivity(ctx, name, args...).Get(ctx, out)
	}
	return workflow.ExecuteActivity(ctx, name, args...).Get(ctx, out)
}

// sleep: a durable timer kept by the server; it fires whether or not a worker is alive, and the
// workflow resumes on whichever worker takes the next workflow task.
func (in *interpreter) sleep(ctx workflow.Context, wf string, s *durabench.Stage) error {
	var due int64
	in.record(ctx, func() {
		due = time.Now().Add(s.Sleep()).UnixNano() // the ledger's clock, read only outside replay
		in.runner.TimerSet(wf, s.Step, due)
	})
	if err := workflow.Sleep(ctx, s.Sleep()); err != nil {
		return err
	}
	in.record(ctx, func() { in.runner.TimerFired(wf, s.Step, due) })
	return nil
}

// waitSignal: the signal's channel against a durable timer of the stage's timeout, whichever first.
func (in *interpreter) waitSignal(ctx workflow.Context, wf string, s *durabench.Stage) error {
	in.record(ctx, func() { in.runner.SignalWait(wf, s.Step) })
	timerCtx, cancelTimer := workflow.WithCancel(ctx)
	defer cancelTimer()
	var payload string
	received := false
	sel := workflow.NewSelector(ctx)
	sel.AddReceive(workflow.GetSignalChannel(ctx, s.Signal), func(c workflow.ReceiveChannel, _ bool) {
		c.Receive(ctx, &payload)
		received = true
	})
	sel.AddFuture(workflow.NewTimer(timerCtx, s.Timeout()), func(workflow.Future) {})
	sel.Select(ctx)
	if received {
		cancelTimer()
		in.record(ctx, func() { in.runner.SignalReceived(wf, s.Step, payload) })
		return nil
	}
	in.record(ctx, func() { in.runner.SignalTimeout(wf, s.Step) })
	if s.OnTimeout == "fail" {
		return temporal.NewApplicationError(fmt.Sprintf("signal %q not received within %s", s.Signal, s.Timeout()),
			"SignalTimeout")
	}
	return nil
}

// parallel: every branch a coroutine of this workflow (workflow.Go), each running its stages in
// order; the join waits for all of them.
func (in *interpreter) parallel(ctx workflow.Context, wf string, plan Plan, s *durabench.Stage) error {
	wg := workflow.NewWaitGroup(ctx)
	errs := make([]error, len(s.Branches))
	for b := range s.Branches {
		wg.Add(1)
		workflow.Go(ctx, func(gctx workflow.Context) {
			defer wg.Done()
			in.record(gctx, func() { in.runner.BranchStart(wf, s.Step, b) })
			if _, err := in.run(gctx, wf, plan, s.Branches[b]); err != nil {
				errs[b] = err
				return
			}
			in.record(gctx, func() { in.runner.BranchEnd(wf, s.Step, b) })
		})
	}
	wg.Wait(ctx)
	if err := errors.Join(errs...); err != nil {
		return err
	}
	in.record(ctx, func() { in.runner.Join(wf, s.Step) })
	return nil
}

// activities are the worker's activities: the stage bodies of durabench.StepRunner, attempt =
// Temporal's attempt counter.
type activities struct {
	runner *durabench.StepRunner
	pool   *pgxpool.Pool // the application database (nil without effect stages)
}

// Step runs a work stage. payload is the previous work stage's output, carried through the
// workflow's history as the activity's input.
func (a *activities) Step(ctx context.Context, index int, payload string) (string, error) {
	info := activity.GetInfo(ctx)
	attempt := int(info.Attempt)
	return a.runner.Run(ctx, info.WorkflowExecution.ID, index, &attempt)
}

// Call makes one attempt of a call stage. A failed attempt is a retryable ApplicationError; after a
// 429 its NextRetryDelay is the larger of Retry-After and the policy's own delay for this attempt
// (NextRetryDelay replaces the policy's delay, so the policy's would otherwise be lost).
func (a *activities) Call(ctx context.Context, index int) (string, error) {
	info := activity.GetInfo(ctx)
	attempt := int(info.Attempt)
	body, err := a.runner.Call(ctx, info.WorkflowExecution.ID, index, &attempt)
	var failed *durabench.CallFailed
	if errors.As(err, &failed) {
		opts := temporal.ApplicationErrorOptions{}
		if failed.RetryAfter > 0 {
			opts.NextRetryDelay = max(failed.RetryAfter, a.runner.Stages[index].Retry.Backoff(attempt))
		}
		return "", temporal.NewApplicationErrorWithOptions(failed.Error(), callErrorType, opts)
	}
	return body, err
}

// Effect applies an effect stage: one autocommitted insert into the application database (plain,
// or insert-if-absent by its key), then the stage's duration_s; returns whether a row was inserted.
func (a *activities) Effect(ctx context.Context, index int) (bool, error) {
	info := activity.GetInfo(ctx)
	attempt := int(info.Attempt)
	wf := info.WorkflowExecution.ID
	if a.pool == nil {
		return false, errors.New("effect stage without an application database")
	}
	a.runner.EffectStarted(wf, index, &attempt)
	query, args := a.runner.EffectStatement(wf, index, &attempt)
	tag, err := a.pool.Exec(ctx, query, args...)
	if err != nil {
		a.runner.Ledger.Record("step_error", wf, index, durabench.Fields{"attempt": attempt, "error": err.Error()})
		return false, err
	}
	inserted := tag.RowsAffected() == 1
	a.runner.EffectApplied(wf, index, &attempt, inserted)
	// the rest of the step (duration_s): after the insert's commit, before the activity's completion
	// reaches the server (Temporal's checkpoint of this step)
	if err := a.runner.EffectRest(ctx, index); err != nil {
		return inserted, err
	}
	a.runner.Ledger.Step("step_end", wf, index, &attempt)
	return inserted, nil
}
