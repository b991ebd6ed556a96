// durabench adapter for DBOS Transact Go (github.com/dbos-inc/dbos-transact-golang).
//
// One binary, three roles (argv[1]):
//
//	worker     a DBOS worker: config from $DURABENCH_WORKER_CONFIG, runs until SIGTERM/SIGKILL
//	bootstrap  migrate the system database and register the queue once, then exit
//	submit     a long-lived client: reads requests on stdin, one per line, a workflow id to enqueue
//	           or "send\t<key>\t<workflow id>\t<topic>\t<payload>" (dbos.Send), and answers one
//	           line per request on stdout ("ok <id|key>" or "err <id|key> <message>"), in
//	           completion order
//
// See README.md beside this file.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dbos-inc/dbos-transact-golang/dbos"
	"github.com/dbos-inc/dbos-transact-golang/dbos/internals"
	"github.com/durabench/durabench/engines/gocommon/durabench"
)

const (
	appName      = "durabench"          // DBOS application name: owns the queue and the workflows
	workflowName = "durabench_workflow" // registered name; the submitter enqueues by this name
	stepName     = "durabench_step"
	startTimeout = 2 * time.Minute // DBOS's own default SystemDBStartupTimeout
)

func main() {
	role := "worker"
	if len(os.Args) > 1 {
		role = os.Args[1]
	}
	cfg, err := durabench.LoadConfig()
	if err != nil {
		durabench.Fail(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	switch role {
	case "worker":
		err = serve(cfg, logger)
	case "bootstrap":
		err = bootstrap(cfg, logger)
	case "submit":
		err = submit(cfg, logger)
	default:
		err = fmt.Errorf("unknown role %q (worker, bootstrap, submit)", role)
	}
	if err != nil {
		durabench.Fail(err)
	}
}

// systemDatabaseURL points the harness's Postgres URL at the dedicated system database, with
// pgx's pool_max_conns (DBOS honours it; its own default is 20: internal/sysdb/system_database.go).
func systemDatabaseURL(cfg *durabench.WorkerConfig, poolSize int) (string, error) {
	u, err := url.Parse(cfg.Endpoints["postgres"])
	if err != nil {
		return "", err
	}
	u.Path = "/" + cfg.Settings.String("database")
	q := u.Query()
	if poolSize > 0 {
		q.Set("pool_max_conns", strconv.Itoa(poolSize))
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func executorID(cfg *durabench.WorkerConfig) string {
	id := cfg.Settings.String("executor_id_pattern")
	id = strings.ReplaceAll(id, "{run_id}", cfg.RunID)
	return strings.ReplaceAll(id, "{worker_index}", strconv.Itoa(cfg.WorkerIndex))
}

// bootstrap does what DBOS's own benchmark does before workers start: migrate once, register
// the queue once, so workers launch with SkipMigrations and never contend on the migration.
func bootstrap(cfg *durabench.WorkerConfig, logger *slog.Logger) error {
	s := cfg.Settings
	ctx := context.Background()
	dbURL, err := systemDatabaseURL(cfg, 2)
	if err != nil {
		return err
	}
	if err := dbos.Migrate(ctx, dbURL, dbos.WithMigrateLogger(logger)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	client, err := dbos.NewClient(ctx, dbos.ClientConfig{DatabaseURL: dbURL, AppName: appName, Logger: logger})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer func() { _ = dbos.Shutdown(client, 10*time.Second) }()
	_, err = dbos.RegisterQueue(client, s.String("queue_name"),
		dbos.WithWorkerConcurrency(s.Int("worker_concurrency")),
		dbos.WithQueueBasePollingInterval(s.Duration("polling_interval_s")),
		dbos.WithQueueOnConflict(dbos.QueueConflictAlwaysUpdate),
	)
	if err != nil {
		return fmt.Errorf("register queue: %w", err)
	}
	return migrateApp(ctx, cfg, logger)
}

func serve(cfg *durabench.WorkerConfig, logger *slog.Logger) error {
	s := cfg.Settings
	runner, err := durabench.NewStepRunner(cfg)
	if err != nil {
		return err
	}
	dbURL, err := systemDatabaseURL(cfg, s.Int("sys_db_pool_size"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	stop, cancel := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	// DBOS-Go lets these variables override Config.ExecutorID / ApplicationVersion (dbos.go:
	// processConfig); the settings decide here, so a stray value cannot break recovery.
	for _, name := range []string{"DBOS__VMID", "DBOS__APPVERSION"} {
		if value, ok := os.LookupEnv(name); ok {
			logger.Warn("ignoring environment variable: the durabench settings decide", "name", name, "value", value)
			_ = os.Unsetenv(name)
		}
	}
	dbosCtx, err := dbos.NewContext(ctx, dbos.Config{
		AppName:                appName,
		DatabaseURL:            dbURL,
		ApplicationVersion:     s.String("application_version"),
		ExecutorID:             executorID(cfg),
		SkipMigrations:         true, // the bootstrap migrated; launch only verifies the schema
		Logger:                 logger,
		SystemDBStartupTimeout: startTimeout,
	})
	if err != nil {
		return fmt.Errorf("dbos.NewContext: %w", err)
	}
	app, err := openApp(ctx, cfg, dbosCtx, logger)
	if err != nil {
		return err
	}
	if app != nil {
		defer app.pool.Close()
	}
	p := &programRunner{runner: runner, app: app, resultPoll: s.Duration("child_poll_interval_s")}
	// A DBOS-Go step is a closure: the previous step's output (payload) is in its scope, as an
	// argument would be; DBOS records step outputs, not step inputs (in Python too).
	workflow := func(ctx dbos.Context, _ string) (string, error) {
		wf, err := dbos.GetWorkflowID(ctx)
		if err != nil {
			return "", err
		}
		return p.run(ctx, wf, cfg.Workload.Program)
	}
	// A parallel stage's branch: a child workflow (registered like the workflow, recovered like it).
	p.branch = func(ctx dbos.Context, in branchInput) (string, error) {
		branches := runner.Stages[in.Parallel].Branches
		runner.BranchStart(in.Wf, in.Parallel, in.Branch)
		out, err := p.run(ctx, in.Wf, branches[in.Branch])
		if err != nil {
			return "", err
		}
		runner.BranchEnd(in.Wf, in.Parallel, in.Branch)
		return out, nil
	}
	dbos.RegisterWorkflow(dbosCtx, p.branch, dbos.WithWorkflowName(branchName))
	dbos.RegisterWorkflow(dbosCtx, workflow, dbos.WithWorkflowName(workflowName))
	// Launch recovers this executor id's PENDING workflows (re-enqueues them), then starts the
	// queue runner, whose first pass lists the database-backed queues and starts polling them.
	if err := dbos.Launch(dbosCtx); err != nil {
		return fmt.Errorf("dbos.Launch: %w", err)
	}
	if _, err := dbos.RetrieveQueue(dbosCtx, s.String("queue_name")); err != nil {
		_ = dbos.Shutdown(dbosCtx, 0)
		return fmt.Errorf("queue %q is not registered (bootstrap missing?): %w", s.String("queue_name"), err)
	}
	runner.Ready()
	logger.Info("durabench worker ready", "worker", cfg.WorkerID, "executor_id", executorID(cfg),
		"application_version", s.String("application_version"))
	<-stop.Done()
	// Graceful stop: running workflows are left PENDING for this executor id's next launch.
	_ = dbos.Shutdown(dbosCtx, 0)
	return nil
}

// submit serves enqueue and send requests: one per stdin line, one answer per request on stdout.
// Requests run concurrently (a goroutine each), bounded by the client's connection pool.
func submit(cfg *durabench.WorkerConfig, logger *slog.Logger) error {
	s := cfg.Settings
	dbURL, err := systemDatabaseURL(cfg, s.Int("client_pool_size"))
	if err != nil {
		return err
	}
	ctx := context.Background()
	client, err := dbos.NewClient(ctx, dbos.ClientConfig{
		DatabaseURL: dbURL, AppName: appName, Logger: logger, SystemDBStartupTimeout: startTimeout,
	})
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	queue, version := s.String("queue_name"), s.String("application_version")
	retry := s.Bool("enqueue_retry_connection_errors")
	// Cancelled when stdin closes: retries of connection errors stop with the driver.
	reqCtx, stopRequests := context.WithCancel(ctx)
	defer stopRequests()
	enqueue := func(id string) error {
		_, err := dbos.Enqueue[string](client, queue, workflowName, "",
			dbos.WithEnqueueWorkflowID(id), dbos.WithEnqueueApplicationVersion(version))
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	answer := func(line string) {
		mu.Lock()
		defer mu.Unlock()
		_, _ = out.WriteString(line + "\n")
		_ = out.Flush()
	}
	answer("ready")
	var wg sync.WaitGroup
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64*1024), 1024*1024)
	fail := func(key string, err error) {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		var dbosErr *dbos.Error
		if errors.As(err, &dbosErr) {
			msg = dbosErr.Code.String() + ": " + msg
		}
		answer("err " + key + " " + msg)
	}
	for in.Scan() {
		line := strings.TrimSpace(in.Text())
		if line == "" {
			continue
		}
		if fields := strings.Split(line, "\t"); fields[0] == "send" {
			// send<TAB>key<TAB>workflow id<TAB>topic<TAB>payload: a wait_signal stage's signal.
			if len(fields) != 5 {
				answer("err " + line + " malformed send request")
				continue
			}
			key, wf, topic, payload := fields[1], fields[2], fields[3], fields[4]
			wg.Add(1)
			go func() {
				defer wg.Done()
				// One INSERT into dbos.notifications, committed before the answer; the workflow's
				// dbos.Recv on topic consumes it. No retry here: the driver retries a failed send
				// with a fresh payload. The payload (unique per send) is the idempotency key, as
				// in the Python adapter's DBOSClient.send.
				if err := dbos.Send(client, wf, payload, topic, dbos.WithIdempotencyKey(payload)); err != nil {
					fail(key, err)
					return
				}
				answer("ok " + key)
			}()
			continue
		}
		id := line
		wg.Add(1)
		go func() {
			defer wg.Done()
			// One transaction: INSERT of the ENQUEUED workflow_status row (+ its input), committed
			// before the answer. A repeated id attaches to the existing workflow (default reuse
			// policy), so a retry after a lost commit acknowledgement is harmless.
			var err error
			if retry {
				// DBOS's own retrier for system-database calls (no deadline, 100 ms -> 30 s backoff,
				// transient connection errors only): Python's DBOSClient retries enqueues the same
				// way (db_retry); DBOS-Go's Enqueue alone fails fast.
				err = internals.Retry(reqCtx, func() error { return enqueue(id) }, internals.WithRetrierLogger(logger))
			} else {
				err = enqueue(id)
			}
			if err != nil {
				fail(id, err)
				return
			}
			answer("ok " + id)
		}()
	}
	// stdin closed: the driver is done (or died). Stop retrying, finish what is in flight, leave.
	stopRequests()
	wg.Wait()
	_ = dbos.Shutdown(client, 5*time.Second)
	return in.Err()
}
