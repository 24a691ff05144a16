//go:build integration && amd64

package main_test

import (
	"strings"
	"testing"

	"github.com/sandboxd/sandboxd/daemon/api"
)

// compatSyscalls calls getpid through the 32-bit ABIs of x86-64: int $0x80
// (i386) and the x32 bit.
const compatSyscalls = `#include <stdio.h>
int main(void) {
	long r;
	__asm__ volatile ("int $0x80" : "=a"(r) : "a"(20L) : "memory");
	printf("int80 %ld\n", r);
	fflush(stdout);
	__asm__ volatile ("syscall" : "=a"(r) : "a"(39L | 0x40000000L) : "rcx", "r11", "memory");
	printf("x32 %ld\n", r);
	return 0;
}
`

// The sandbox's seccomp profile admits the native ABI only: a syscall
// through a 32-bit one is refused (runc's filter kills the thread with
// SIGSYS; gVisor answers an error), never served.
func TestCompatSyscallABIsRefused(t *testing.T) {
	forEachRuntime(t, func(t *testing.T, rt string, _ []string) {
		res := execute(t, api.ExecuteRequest{Language: "c", Code: compatSyscalls, Runtime: rt})
		killed := res.Status == api.StatusSignaled && res.Signal == "SIGSYS"
		refused := res.Status == api.StatusOK && strings.HasPrefix(res.Stdout, "int80 -") && strings.Contains(res.Stdout, "\nx32 -")
		if !killed && !refused {
			t.Fatalf("a 32-bit syscall was served: %+v", res)
		}
	})
}
