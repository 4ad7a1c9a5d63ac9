// Command pause is the sandbox ("pause") container of the local cluster's real node.
//
// containerd starts one per pod to hold the pod's namespaces. It must do nothing, cost nothing and stop
// promptly: it sleeps until SIGTERM or SIGINT and exits 0. When the pod shares its process namespace this
// program is PID 1 there, so it also reaps every child that is reparented to it (SIGCHLD), or zombies
// would pile up. No registry is reachable here, so the node uses this instead of registry.k8s.io/pause.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=...") to the image's content hash.
var version = "dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		fmt.Println("gpt-oss-operator pause", version)
		return
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for received := range signals {
		if received == syscall.SIGCHLD {
			reapChildren()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: %v, exiting\n", received)
		return
	}
}

// reapChildren collects every exited child without blocking. One SIGCHLD may stand for several exits
// (signals coalesce), hence the loop until nothing is left to wait for.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
