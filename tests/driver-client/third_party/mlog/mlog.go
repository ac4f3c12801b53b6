// Package mlog is a minimal local stand-in for monis.app/mlog, which the Go
// module proxy reachable from this project's machines refuses to serve (403).
//
// The driver package sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store
// imports it only for one mlog.Fatal call in server.go (the driver's own CSI
// gRPC server, which driver-client never starts). The provider-client code
// driver-client exercises (provider_client.go, pkg/util/fileutil) does not
// use it. Each module's go.mod points monis.app/mlog here with a replace
// directive.
package mlog

import (
	"fmt"
	"os"
)

// Fatal logs err with optional key/value pairs to stderr and exits with
// status 1, like the real mlog.Fatal.
func Fatal(err error, keysAndValues ...any) {
	fmt.Fprintf(os.Stderr, "fatal: %v %v\n", err, keysAndValues)
	os.Exit(1)
}
