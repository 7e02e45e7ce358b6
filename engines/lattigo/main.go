// Command he-approx-lattigo is he-approx's CKKS engine with bootstrapping: it runs the trace a
// he-approx program was lowered to (src/core/he/trace.ts) on Lattigo v6, whose bootstrapping
// (circuits/ckks/bootstrapping) refreshes ciphertexts where the program says. The TypeScript side
// decides every operation; this program only executes them and reports.
//
//	he-approx-lattigo version
//	he-approx-lattigo chain '{"logN":16,"levels":9,"bootstrap":true}'   -> the primes and slots, as JSON
//	he-approx-lattigo run DIR                                           -> runs DIR/job.json, events on stdout
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"
)

// Version of the engine's protocol and build; the TypeScript side checks it.
const Version = "he-approx-lattigo 3 (lattigo v6.1.1)"

func fail(err error) {
	emit(event{"type": "error", "message": err.Error()})
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: he-approx-lattigo version | chain SPEC | run DIR")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "version":
		fmt.Println(Version)
	case "chain":
		if len(os.Args) < 3 {
			fail(fmt.Errorf("chain needs a parameter spec"))
		}
		var s Spec
		if err := json.Unmarshal([]byte(os.Args[2]), &s); err != nil {
			fail(fmt.Errorf("spec: %w", err))
		}
		params, btp, security, err := Scheme(s)
		if err != nil {
			fail(err)
		}
		b, _ := json.Marshal(ChainOf(params, btp, security))
		fmt.Println(string(b))
	case "run":
		if len(os.Args) < 3 {
			fail(fmt.Errorf("run needs a job folder"))
		}
		// The bootstrapping keys are most of the live heap and live for the whole run; Go's default
		// (a heap twice the live data before collecting) would double the process's footprint for
		// no speed gain (bench/lattigo.ts). GOGC set by the user wins.
		if os.Getenv("GOGC") == "" {
			debug.SetGCPercent(10)
		}
		if err := Run(os.Args[2]); err != nil {
			fail(err)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
