package main

// The workflow program in DBOS-Go's idiom (docs/engines.md, "Workflow programs"; README.md here):
//
//	work         dbos.RunAsStep
//	call         dbos.RunAsStep with the stage's retry policy as step retry options
//	parallel     one child workflow per branch (dbos.RunWorkflow), joined with GetResult
//	sleep        dbos.Sleep (the wake-up time is checkpointed: durable across a crash)
//	wait_signal  dbos.Recv on the signal's topic, with the stage's timeout (sent by dbos.Send)
//	effect       dbos.RunAsTransaction on a DataSource over the application database: the insert and
//	             DBOS's completion row commit in one transaction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/durabench/durabench/engines/gocommon/durabench"
	"github.com/jackc/pgx/v5/pgxpool"
)

const (
	branchName     = "durabench_branch" // the child workflow of a parallel stage's branch
	callStepName   = "durabench_call"
	effectStepName = "durabench_effect"
	dataSourceName = "durabench_app"
)

// branchInput names one branch: the submitted workflow's id (every record and effect of a branch
// carries it), the parallel stage and the branch index.
type branchInput struct {
	Wf       string `json:"wf"`
	Parallel int    `json:"parallel"`
	Branch   int    `json:"branch"`
}

// appDB is the application database as a DBOS data source.
type appDB struct {
	pool *pgxpool.Pool
	ds   *dbos.DataSource
}

// appPoolURL is endpoints.app_db with pgx's pool_max_conns = settings.app_db_pool_size.
func appPoolURL(cfg *durabench.WorkerConfig) (string, error) {
	raw, ok := cfg.Endpoints["app_db"]
	if !ok {
		return "", errors.New("the program has an effect stage but the config has no app_db endpoint")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := u.Query()
	q.Set("pool_max_conns", strconv.Itoa(cfg.Settings.Int("app_db_pool_size")))
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// openApp registers the application database as a data source (before Launch, as DBOS-Go
// requires), or returns nil when the program has no effect stage. The bootstrap created its
// transaction_completion table (migrateApp), so workers only verify it.
func openApp(ctx context.Context, cfg *durabench.WorkerConfig, dbosCtx dbos.Context, logger *slog.Logger) (*appDB, error) {
	if !durabench.Kinds(cfg.Workload.Program)[durabench.KindEffect] {
		return nil, nil
	}
	dsn, err := appPoolURL(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("application database: %w", err)
	}
	ds, err := dbos.NewDataSource(dbosCtx, pool, dbos.WithDataSourceName(dataSourceName), dbos.WithDataSourceSkipMigrations())
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("application database as a DBOS data source: %w", err)
	}
	logger.Info("application database registered as a DBOS data source", "name", dataSourceName)
	return &appDB{pool: pool, ds: ds}, nil
}

// migrateApp creates the data source's table (dbos.transaction_completion) in the application
// database, once, in the bootstrap; a program without effect stages needs none.
func migrateApp(ctx context.Context, cfg *durabench.WorkerConfig, logger *slog.Logger) error {
	if !durabench.Kinds(cfg.Workload.Program)[durabench.KindEffect] {
		return nil
	}
	dsn, err := appPoolURL(cfg)
	if err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return err
	}
	defer pool.Close()
	if err := dbos.MigrateDataSource(ctx, pool, dbos.WithMigrateLogger(logger)); err != nil {
		return fmt.Errorf("migrate the application database's data source table: %w", err)
	}
	return nil
}

// programRunner interprets a program inside a DBOS workflow.
type programRunner struct {
	runner *durabench.StepRunner
	app    *appDB
	branch func(dbos.Context, branchInput) (string, error) // registered as branchName
	// how often a recovered parent polls a child's status (a handle from before the crash is gone)
	resultPoll time.Duration
}

// run executes stages in order in workflow wf (the submitted workflow, also inside a branch's
// child workflow); returns the payload of the last work stage.
func (p *programRunner) run(ctx dbos.Context, wf string, stages []durabench.Stage) (string, error) {
	payload := ""
	for i := range stages {
		s := &stages[i]
		var err error
		switch s.Kind {
		case durabench.KindWork:
			payload, err = dbos.RunAsStep(ctx, func(stepCtx context.Context) (string, error) {
				// DBOS keeps no step attempt counter across a crash: attempt is null, the ledger counts.
				return p.runner.Run(stepCtx, wf, s.Step, nil)
			}, dbos.WithStepName(stepName))
		case durabench.KindCall:
			err = p.call(ctx, wf, s)
		case durabench.KindEffect:
			err = p.effect(ctx, wf, s)
		case durabench.KindSleep:
			err = p.sleep(ctx, wf, s)
		case durabench.KindWaitSignal:
			err = p.waitSignal(ctx, wf, s)
		case durabench.KindParallel:
			err = p.parallel(ctx, wf, s)
		default:
			err = fmt.Errorf("stage %d: unknown kind %q", s.Step, s.Kind)
		}
		if err != nil {
			return "", err
		}
	}
	return payload, nil
}

// call: one step whose retries are DBOS's step retries under the stage's policy (WithStepMaxRetries
// = attempts - 1, base interval, backoff factor, max interval). DBOS-Go's retry loop has no
// per-error delay, so a 429's Retry-After is not honoured (README: "Programs").
func (p *programRunner) call(ctx dbos.Context, wf string, s *durabench.Stage) error {
	r := s.Retry
	runs := 0 // the closure's runs in this execution of the step (DBOS-Go exposes no attempt counter)
	_, err := dbos.RunAsStep(ctx, func(stepCtx context.Context) (string, error) {
		runs++
		attempt := runs
		return p.runner.Call(stepCtx, wf, s.Step, &attempt)
	}, dbos.WithStepName(callStepName),
		dbos.WithStepMaxRetries(r.MaxAttempts-1),
		dbos.WithStepBaseInterval(r.InitialBackoff()),
		dbos.WithStepBackoffFactor(r.Multiplier),
		dbos.WithStepMaxInterval(r.MaxBackoff()))
	return err
}

// effect: a DBOS transaction on the application database. The insert (plain, or insert-if-absent by
// key), the step's remaining time (duration_s) and DBOS's transaction_completion row are one
// transaction, so a crash before its commit leaves nothing, and a re-execution after it finds the
// completion row and replays its output instead of inserting again. step_end is written inside the
// transaction just before its commit, as every step body writes its step_end before DBOS checkpoints
// it (a crash after the commit then leaves no step without an end); effect_applied once the commit
// returned, by the execution that ran the insert.
func (p *programRunner) effect(ctx dbos.Context, wf string, s *durabench.Stage) error {
	if p.app == nil {
		return errors.New("effect stage without an application database")
	}
	ran, inserted := false, false
	_, err := dbos.RunAsTransaction(ctx, p.app.ds, func(txCtx context.Context, tx dbos.Tx) (bool, error) {
		ran = true
		p.runner.EffectStarted(wf, s.Step, nil)
		query, args := p.runner.EffectStatement(wf, s.Step, nil)
		res, err := tx.Exec(txCtx, query, args...)
		if err != nil {
			p.runner.Ledger.Record("step_error", wf, s.Step, durabench.Fields{"attempt": nil, "error": err.Error()})
			return false, err
		}
		n, err := res.RowsAffected()
		inserted = err == nil && n == 1
		// the rest of the step (duration_s): inside the transaction, before its commit
		if err := p.runner.EffectRest(txCtx, s.Step); err != nil {
			return false, err
		}
		p.runner.Ledger.Step("step_end", wf, s.Step, nil)
		return inserted, nil
	}, dbos.WithStepName(effectStepName))
	if err == nil && ran { // ran false: the transaction had committed before (its output replayed)
		p.runner.EffectApplied(wf, s.Step, nil, inserted)
	}
	return err
}

// sleep: dbos.Sleep checkpoints the wake-up time, so a recovered workflow sleeps only what is left.
func (p *programRunner) sleep(ctx dbos.Context, wf string, s *durabench.Stage) error {
	due := time.Now().Add(s.Sleep()).UnixNano()
	p.runner.TimerSet(wf, s.Step, due)
	if _, err := dbos.Sleep(ctx, s.Sleep()); err != nil {
		return err
	}
	p.runner.TimerFired(wf, s.Step, due)
	return nil
}

// waitSignal: dbos.Recv on the topic named after the signal; its timeout is durable too (DBOS
// checkpoints the deadline), and a timeout is DBOS's ErrTimeout, replayed as such on recovery.
func (p *programRunner) waitSignal(ctx dbos.Context, wf string, s *durabench.Stage) error {
	p.runner.SignalWait(wf, s.Step)
	payload, err := dbos.Recv[string](ctx, s.Signal, s.Timeout())
	if errors.Is(err, dbos.ErrTimeout) {
		p.runner.SignalTimeout(wf, s.Step)
		if s.OnTimeout == "fail" {
			return fmt.Errorf("signal %q not received within %s: %w", s.Signal, s.Timeout(), err)
		}
		return nil
	}
	if err != nil {
		return err
	}
	p.runner.SignalReceived(wf, s.Step, payload)
	return nil
}

// parallel: every branch a child workflow started at once (DBOS runs each in its own goroutine and
// checkpoints its id in the parent), then joined by waiting for every result.
func (p *programRunner) parallel(ctx dbos.Context, wf string, s *durabench.Stage) error {
	handles := make([]dbos.WorkflowHandle[string], len(s.Branches))
	for b := range s.Branches {
		h, err := dbos.RunWorkflow(ctx, p.branch, branchInput{Wf: wf, Parallel: s.Step, Branch: b})
		if err != nil {
			return err
		}
		handles[b] = h
	}
	var failed error
	for _, h := range handles {
		if _, err := h.GetResult(dbos.WithHandlePollingInterval(p.resultPoll)); err != nil && failed == nil {
			failed = err
		}
	}
	if failed != nil {
		return failed
	}
	p.runner.Join(wf, s.Step)
	return nil
}
