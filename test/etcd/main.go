// Command etcd is the etcd server, built from the Go module proxy for the cluster tests when no
// etcd binary is installed (test/helpers/etcd.ts builds it once into ~/.cache/minkms-e2e/).
//
// `go install go.etcd.io/etcd/server/v3@VERSION` is refused because etcd's own go.mod files
// carry replace directives; a main module of our own that only calls etcdmain.Main is built
// like any program, with etcd as an ordinary dependency pinned by go.mod and go.sum.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
