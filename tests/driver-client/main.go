// Command driver-client calls a Secrets Store CSI provider over its Unix
// socket using the real driver's provider-client code
// (sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store): the driver's own
// PluginClientBuilder (dial options, service config, retry policy) and
// MountContent (response checks and the atomic file writer).
//
// This one source file is shared by two Go modules, ./v1.5 and ./v1.6, which
// pin different driver (and grpc-go) versions; each holds a symlink to it.
// Build both with ./build.sh OUTDIR.
//
// Usage:
//
//	driver-client mount --providers-dir DIR --provider NAME [--timeout 30s] < request.json > result.json
//	driver-client storm --providers-dir DIR --provider NAME --concurrency N [--timeout 30s] < requests.jsonl > results.jsonl
//	driver-client version
//
// request: {"attributes": "<json string>", "secrets": "<json string>",
// "targetPath": "/abs/dir", "permission": "420"} plus the optional extension
// "currentObjectVersions": {"id": "version"} (passed to MountContent as the
// old object versions, as the v1.5 rotation reconciler does; the driver's
// mount path passes none).
//
// result: {"ok": true, "objectVersions": {...}} or {"ok": false, "grpcCode":
// "...", "message": "...", "errorCode": "..."}; storm lines add "micros" (the
// MountContent call) and "endMicros" (from the start of the storm's fan-out to
// the end of this call, so the largest is the storm's total time).
// Exit code 0 whenever calls were made (whatever their outcome), 2 for usage
// errors or unreadable input.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	secretsstore "sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store"
)

const usage = `usage:
  driver-client mount --providers-dir DIR --provider NAME [--timeout 30s] < request.json > result.json
  driver-client storm --providers-dir DIR --provider NAME --concurrency N [--timeout 30s] < requests.jsonl > results.jsonl
  driver-client version
`

// defaultMaxCallRecvMsgSize is the driver's --max-call-recv-msg-size default.
const defaultMaxCallRecvMsgSize = 4 * 1024 * 1024

type request struct {
	Attributes            string            `json:"attributes"`
	Secrets               string            `json:"secrets"`
	TargetPath            string            `json:"targetPath"`
	Permission            string            `json:"permission"`
	CurrentObjectVersions map[string]string `json:"currentObjectVersions,omitempty"`
}

type options struct {
	providersDirs []string
	provider      string
	timeout       time.Duration
	concurrency   int
	maxRecv       int
}

func main() {
	if len(os.Args) < 2 {
		usageExit("missing subcommand")
	}
	switch os.Args[1] {
	case "mount":
		opts := parseFlags("mount", os.Args[2:])
		os.Exit(runMount(opts, os.Stdin, os.Stdout))
	case "storm":
		opts := parseFlags("storm", os.Args[2:])
		os.Exit(runStorm(opts, os.Stdin, os.Stdout))
	case "version":
		printVersion(os.Stdout)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
	default:
		usageExit(fmt.Sprintf("unknown subcommand %q", os.Args[1]))
	}
}

func usageExit(msg string) {
	fmt.Fprintf(os.Stderr, "driver-client: %s\n%s", msg, usage)
	os.Exit(2)
}

func parseFlags(cmd string, args []string) options {
	fs := flag.NewFlagSet(cmd, flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	dirs := fs.String("providers-dir", "", "directory holding <provider>.sock (comma-separated list allowed; searched in order, like the driver)")
	provider := fs.String("provider", "", "provider name (socket is <providers-dir>/<provider>.sock)")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for each MountContent call")
	maxRecv := fs.Int("max-call-recv-msg-size", defaultMaxCallRecvMsgSize, "as the driver flag of the same name")
	concurrency := 1
	if cmd == "storm" {
		fs.IntVar(&concurrency, "concurrency", 0, "maximum requests in flight")
	}
	if err := fs.Parse(args); err != nil {
		usageExit(err.Error())
	}
	if fs.NArg() != 0 {
		usageExit(fmt.Sprintf("unexpected arguments: %v", fs.Args()))
	}
	if *dirs == "" || *provider == "" {
		usageExit("--providers-dir and --provider are required")
	}
	if concurrency < 1 {
		usageExit("--concurrency must be >= 1")
	}
	if *timeout <= 0 {
		usageExit("--timeout must be > 0")
	}
	return options{
		providersDirs: strings.Split(*dirs, ","),
		provider:      *provider,
		timeout:       *timeout,
		concurrency:   concurrency,
		maxRecv:       *maxRecv,
	}
}

// newBuilder builds the client factory exactly as the driver's main.go does.
func newBuilder(opts options) *secretsstore.PluginClientBuilder {
	return secretsstore.NewPluginClientBuilder(opts.providersDirs,
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(opts.maxRecv)))
}

// call performs one mount as the driver's NodePublishVolume does: Get the
// (cached) client for the provider, then MountContent. The returned duration
// covers the MountContent call only.
func call(b *secretsstore.PluginClientBuilder, opts options, req request) (map[string]any, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	defer cancel()

	client, err := b.Get(ctx, opts.provider)
	if err != nil {
		return failure(err, ""), 0
	}
	start := time.Now()
	versions, errorCode, err := secretsstore.MountContent(ctx, client,
		req.Attributes, req.Secrets, req.TargetPath, req.Permission, req.CurrentObjectVersions)
	elapsed := time.Since(start)
	if err != nil {
		// MountContent returns the provider's MountResponse.error.code as its
		// second value with exactly this message; any other failure kind
		// (gRPC error, missing object versions, file write) returns an
		// internal error type there instead, which we do not report.
		if errorCode == "" || err.Error() != "mount request failed with provider error code "+errorCode {
			errorCode = ""
		}
		return failure(err, errorCode), elapsed
	}
	if versions == nil {
		versions = map[string]string{}
	}
	return map[string]any{"ok": true, "objectVersions": versions}, elapsed
}

func failure(err error, errorCode string) map[string]any {
	grpcCode, message := "", err.Error()
	if st, ok := status.FromError(err); ok {
		grpcCode, message = st.Code().String(), st.Message()
	}
	return map[string]any{"ok": false, "grpcCode": grpcCode, "message": message, "errorCode": errorCode}
}

func decodeRequest(data []byte) (request, error) {
	var req request
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, err
	}
	if dec.More() {
		return req, errors.New("trailing data after request object")
	}
	return req, nil
}

func runMount(opts options, in io.Reader, out io.Writer) int {
	data, err := io.ReadAll(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "driver-client: reading stdin: %v\n", err)
		return 2
	}
	req, err := decodeRequest(data)
	if err != nil {
		fmt.Fprintf(os.Stderr, "driver-client: bad request JSON: %v\n", err)
		return 2
	}
	b := newBuilder(opts)
	defer b.Cleanup()
	res, _ := call(b, opts, req)
	if err := json.NewEncoder(out).Encode(res); err != nil {
		fmt.Fprintf(os.Stderr, "driver-client: writing result: %v\n", err)
		return 1
	}
	return 0
}

func runStorm(opts options, in io.Reader, out io.Writer) int {
	var reqs []request
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		req, err := decodeRequest(text)
		if err != nil {
			fmt.Fprintf(os.Stderr, "driver-client: bad request JSON on line %d: %v\n", line, err)
			return 2
		}
		reqs = append(reqs, req)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "driver-client: reading stdin: %v\n", err)
		return 2
	}

	b := newBuilder(opts) // one builder, so one cached client, as in the driver
	defer b.Cleanup()
	// Create the cached client before fanning out: concurrent first Gets
	// would each dial, and the builder drops (without closing) the losers.
	// An error here is reported again by each request's own Get.
	ctx, cancel := context.WithTimeout(context.Background(), opts.timeout)
	_, _ = b.Get(ctx, opts.provider)
	cancel()
	results := make([]map[string]any, len(reqs))
	sem := make(chan struct{}, opts.concurrency)
	began := time.Now()
	var wg sync.WaitGroup
	for i := range reqs {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			res, elapsed := call(b, opts, reqs[i])
			res["micros"] = elapsed.Microseconds()
			res["endMicros"] = time.Since(began).Microseconds()
			results[i] = res
		}(i)
	}
	wg.Wait()

	w := bufio.NewWriter(out)
	enc := json.NewEncoder(w)
	for _, res := range results {
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(os.Stderr, "driver-client: writing results: %v\n", err)
			return 1
		}
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "driver-client: writing results: %v\n", err)
		return 1
	}
	return 0
}

// printVersion reports the driver and grpc-go module versions linked in.
func printVersion(out io.Writer) {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(out, "unknown")
		return
	}
	fmt.Fprintf(out, "go %s\n", info.GoVersion)
	for _, dep := range info.Deps {
		if dep.Path == "sigs.k8s.io/secrets-store-csi-driver" || dep.Path == "google.golang.org/grpc" {
			fmt.Fprintf(out, "%s %s\n", dep.Path, dep.Version)
		}
	}
}
