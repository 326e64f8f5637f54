// Command tiny is the smallest Go program: hack/release's test cross-compiles it for every platform so that it
// builds a real multi-arch index in seconds.
package main

func main() {}
