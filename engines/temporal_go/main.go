// durabench adapter for Temporal's Go SDK (go.temporal.io/sdk): one worker process.
//
// Config from $DURABENCH_WORKER_CONFIG; polls the run's task queue with identity worker_id,
// runs DurabenchWorkflow and its step activity (regular or local, per the workflow input),
// writes `ready` once the server has seen this process's polls, runs until SIGTERM or SIGKILL.
// Workflows are started by the harness's Python client (Temporal payloads are JSON in both
// SDKs); see README.md beside this file.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/durabench/durabench/engines/gocommon/durabench"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"
)

const (
	workflowName = "DurabenchWorkflow" // the name the Python client starts
	stepActivity = "durabench_step"
	retryPause   = 100 * time.Millisecond // between readiness probes
)

// Plan is the workflow input, the JSON the client sends: how to run work and effect activities
// (the run's settings) and the program's stages, the same fields as engines/temporal/workflow.py's
// Plan.
type Plan struct {
	Steps                   int     `json:"steps"`
	Local                   bool    `json:"local"`
	StartToCloseS           float64 `json:"start_to_close_s"`
	RetryInitialIntervalS   float64 `json:"retry_initial_interval_s"`
	RetryBackoffCoefficient float64 `json:"retry_backoff_coefficient"`
	RetryMaximumIntervalS   float64 `json:"retry_maximum_interval_s"`
	RetryMaximumAttempts    int32   `json:"retry_maximum_attempts"`
	// Set by this adapter only (engines/temporal_go/__init__.py): a local activity's overall timeout.
	LocalScheduleToCloseS float64 `json:"local_schedule_to_close_s"`
	// The compiled program (docs/engines.md "Workflow programs"); Steps is its number of stages.
	Program []durabench.Stage `json:"program"`
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func main() {
	started := time.Now()
	cfg, err := durabench.LoadConfig()
	if err != nil {
		durabench.Fail(err)
	}
	if err := serve(cfg, started); err != nil {
		durabench.Fail(err)
	}
}

// frontend is the Temporal frontend's address: the production server's ("temporal-server") when the
// engine runs on it, else the dev server's ("temporal"); engines.temporal_common.frontend in Python.
func frontend(endpoints map[string]string) string {
	if addr, ok := endpoints["temporal-server"]; ok {
		return addr
	}
	return endpoints["temporal"]
}

func taskQueue(cfg *durabench.WorkerConfig) string {
	return cfg.Settings.String("task_queue_prefix") + "-" + cfg.RunID
}

func serve(cfg *durabench.WorkerConfig, started time.Time) error {
	s := cfg.Settings
	runner, err := durabench.NewStepRunner(cfg)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	readyTimeout := s.Duration("ready_timeout_s")
	var c client.Client
	err = retryUntil("connection", readyTimeout, func() error {
		var dialErr error
		c, dialErr = client.Dial(client.Options{
			HostPort:  frontend(cfg.Endpoints),
			Namespace: s.String("namespace"),
			Identity:  cfg.WorkerID,
			Logger:    tlog.NewStructuredLogger(logger),
		})
		return dialErr
	})
	if err != nil {
		return err
	}
	defer c.Close()

	// Process-wide in the Go SDK (Python: per Worker); one worker per process here.
	worker.SetStickyWorkflowCacheSize(s.Int("max_cached_workflows"))
	w := worker.New(c, taskQueue(cfg), worker.Options{
		Identity:                                cfg.WorkerID,
		MaxConcurrentWorkflowTaskExecutionSize:  s.Int("max_concurrent_workflow_tasks"),
		MaxConcurrentActivityExecutionSize:      s.Int("max_concurrent_activities"),
		MaxConcurrentLocalActivityExecutionSize: s.Int("max_concurrent_local_activities"),
		MaxConcurrentWorkflowTaskPollers:        s.Int("workflow_task_pollers"),
		MaxConcurrentActivityTaskPollers:        s.Int("activity_task_pollers"),
		StickyScheduleToStartTimeout:            s.Duration("sticky_queue_schedule_to_start_timeout_s"),
		DisableEagerActivities:                  !s.Bool("eager_activity_execution"),
		LocalActivityWorkerOnly:                 s.Bool("no_remote_activities"),
		DisableRegistrationAliasing:             true,
	})
	pool, err := openApp(cfg)
	if err != nil {
		return err
	}
	if pool != nil {
		defer pool.Close()
	}
	in := &interpreter{runner: runner, program: cfg.Workload.Program}
	acts := &activities{runner: runner, pool: pool}
	w.RegisterWorkflowWithOptions(in.Workflow, workflow.RegisterOptions{Name: workflowName})
	w.RegisterActivityWithOptions(acts.Step, activity.RegisterOptions{Name: stepActivity})
	w.RegisterActivityWithOptions(acts.Call, activity.RegisterOptions{Name: callActivity})
	w.RegisterActivityWithOptions(acts.Effect, activity.RegisterOptions{Name: effectActivity})
	if err := w.Start(); err != nil {
		return fmt.Errorf("worker start: %w", err)
	}
	defer w.Stop()

	types := []enumspb.TaskQueueType{enumspb.TASK_QUEUE_TYPE_WORKFLOW}
	if !s.Bool("no_remote_activities") {
		types = append(types, enumspb.TASK_QUEUE_TYPE_ACTIVITY)
	}
	if err := waitPolling(c, cfg, types, started, readyTimeout); err != nil {
		logger.Warn("declaring ready anyway", "reason", err)
	}
	runner.Ready()
	logger.Info("durabench worker polling", "worker", cfg.WorkerID, "task_queue", taskQueue(cfg))

	stop, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	<-stop.Done()
	return nil // deferred w.Stop(): graceful stop (WorkerStopTimeout 0 cancels running steps)
}

// waitPolling returns once the server's task queue lists a poll from this identity newer than
// this process's start (the SDK has no "polling started" event; a poll of the killed
// incarnation of the same identity is older). The same probe as the Python worker.
func waitPolling(c client.Client, cfg *durabench.WorkerConfig, types []enumspb.TaskQueueType, since time.Time, timeout time.Duration) error {
	name := taskQueue(cfg)
	return retryUntil("worker polling", timeout, func() error {
		for _, tqType := range types {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			resp, err := c.DescribeTaskQueue(ctx, name, tqType)
			cancel()
			if err != nil {
				return err
			}
			seen := false
			for _, p := range resp.GetPollers() {
				if p.GetIdentity() == cfg.WorkerID && !p.GetLastAccessTime().AsTime().Before(since) {
					seen = true
					break
				}
			}
			if !seen {
				return fmt.Errorf("no poll from %s on %s (%s) yet", cfg.WorkerID, name, tqType)
			}
		}
		return nil
	})
}

func retryUntil(what string, timeout time.Duration, probe func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := probe()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("temporal: %s not ready after %s: %w", what, timeout, err)
		}
		time.Sleep(retryPause)
	}
}
