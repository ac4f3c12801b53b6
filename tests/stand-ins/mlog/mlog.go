// Package mlog is a minimal local stand-in for monis.app/mlog, which the Go
// module proxy reachable from this project's machines refuses to serve (403).
// It is our own code, not a copy: it provides only the identifiers the
// Secrets Store CSI Driver uses, with the behaviour the tests need.
//
// Users (each module's go.mod points monis.app/mlog here with a replace
// directive):
//
//   - tests/driver-client (the driver's provider client): the package
//     sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store calls mlog.Fatal
//     once, in its own CSI gRPC server, which driver-client never starts.
//   - the driver binary (cmd/secrets-store-csi-driver, v1.5.x and v1.6.x),
//     built for the Kubernetes end-to-end tests: its main calls Setup,
//     ValidateAndSetKlogLevelAndFormatGlobally, Error and Fatal; v1.5's
//     rotation reconciler calls Fatal.
//
// The driver logs through klog, which writes to stderr by itself; the real
// mlog only re-configures klog (level and text/JSON format). Here the level
// stays what klog's own -v flag set (the driver registers klog's flags before
// parsing), and only the text format is supported.
package mlog

import (
	"context"
	"errors"
	"fmt"
	"os"
)

// LogFormat selects the log output format.
type LogFormat string

const (
	// FormatText is klog's plain text output (the only one supported here).
	FormatText LogFormat = "text"
	// FormatJSON is JSON output; refused by this stand-in.
	FormatJSON LogFormat = "json"
)

// Setup prepares logging and returns the function to call at exit.
func Setup() func() {
	return func() {}
}

// ValidateAndSetKlogLevelAndFormatGlobally accepts the level klog already
// has (its -v flag) and the text format. The level's type is klog.Level; a
// type parameter keeps this stand-in free of dependencies.
func ValidateAndSetKlogLevelAndFormatGlobally[L ~int32](_ context.Context, level L, format LogFormat) error {
	if level < 0 {
		return fmt.Errorf("invalid log level %d", level)
	}
	if format != FormatText {
		return errors.New("log format " + string(format) + " is not supported by the local monis.app/mlog stand-in (tests/stand-ins/mlog)")
	}
	return nil
}

// Error logs msg and err with optional key/value pairs to stderr.
func Error(msg string, err error, keysAndValues ...any) {
	fmt.Fprintf(os.Stderr, "error: %s: %v %v\n", msg, err, keysAndValues)
}

// Fatal logs err with optional key/value pairs to stderr and exits with
// status 1, like the real mlog.Fatal.
func Fatal(err error, keysAndValues ...any) {
	fmt.Fprintf(os.Stderr, "fatal: %v %v\n", err, keysAndValues)
	os.Exit(1)
}
