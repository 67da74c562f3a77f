// What a Go program sees of the CPU: leaves 0 and 1, in the C probe's format
// (supervisor/tests/probe.c). Go links statically and its runtime asks CPUID before any
// system call.
package main

import "fmt"

func cpuid(leaf uint32) (eax, ebx, ecx, edx uint32)

func main() {
	for _, leaf := range []uint32{0, 1} {
		a, b, c, d := cpuid(leaf)
		fmt.Printf("%x.0 %08x %08x %08x %08x\n", leaf, a, b, c, d)
	}
}
