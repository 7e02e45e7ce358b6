package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tuneinsight/lattigo/v6/circuits/ckks/bootstrapping"
	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// Op is one instruction of a trace (src/core/he/trace.ts: TraceOp), on numbered ciphertexts.
type Op struct {
	Op      string  `json:"op"`
	Out     int     `json:"out"`
	A       int     `json:"a"`
	B       int     `json:"b"`
	K       float64 `json:"k"`
	C       int     `json:"c"`
	S       float64 `json:"s"`
	Level   int     `json:"level"`
	InPlace bool    `json:"inPlace"`
	Name    string  `json:"name"`
}

// Job is a trace to run on some inputs (job.json, consts.bin, inputs.bin in one folder).
type Job struct {
	Spec      Spec     `json:"spec"`
	Inputs    int      `json:"inputs"`
	Output    int      `json:"output"`
	B         int      `json:"B"`
	Ops       []Op     `json:"ops"`
	Consts    [][2]int `json:"consts"`    // [offset, length] in float64s into consts.bin
	Runs      int      `json:"runs"`      // runs of Inputs ciphertexts each, in inputs.bin
	OutLength int      `json:"outLength"` // output slots written per run
	Rotations []int    `json:"rotations"`
	// Precision: decrypt around every bootstrap to measure what it kept (the engine holds the secret key of its own test).
	Precision bool `json:"precision"`
}

type event map[string]any

var emitMu sync.Mutex

// emit writes one event line; workers emit concurrently, and a line must not interleave.
func emit(e event) {
	b, _ := json.Marshal(e)
	emitMu.Lock()
	defer emitMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func readFloats(path string) ([]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("%s: %d bytes is not a whole number of float64s", filepath.Base(path), len(b))
	}
	out := make([]float64, len(b)/8)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

// expand turns (count, value) runs into the vector they stand for.
func expand(runs []float64) []float64 {
	n := 0
	for k := 0; k < len(runs); k += 2 {
		n += int(runs[k])
	}
	out := make([]float64, 0, n)
	for k := 0; k < len(runs); k += 2 {
		for j := 0; j < int(runs[k]); j++ {
			out = append(out, runs[k+1])
		}
	}
	return out
}

// spread lays a per-position vector (periodic in its length) over the slots: slot q*B+b = v[q mod len].
func spread(v []float64, B, slots int) []float64 {
	out := make([]float64, slots)
	for q := 0; q < slots/B; q++ {
		x := v[q%len(v)]
		for b := 0; b < B; b++ {
			out[q*B+b] = x
		}
	}
	return out
}

// Run executes a job: keys, then every run's inputs through the trace, its output decrypted.
func Run(dir string) error {
	raw, err := os.ReadFile(filepath.Join(dir, "job.json"))
	if err != nil {
		return err
	}
	var job Job
	if err := json.Unmarshal(raw, &job); err != nil {
		return fmt.Errorf("job.json: %w", err)
	}
	params, btpParams, security, err := Scheme(job.Spec)
	if err != nil {
		return err
	}
	constVals, err := readFloats(filepath.Join(dir, "consts.bin"))
	if err != nil {
		return err
	}
	inputVals, err := readFloats(filepath.Join(dir, "inputs.bin"))
	if err != nil {
		return err
	}
	slots := params.MaxSlots()
	if len(inputVals) != job.Runs*job.Inputs*slots {
		return fmt.Errorf("inputs.bin holds %d values, not %d runs x %d ciphertexts x %d slots", len(inputVals), job.Runs, job.Inputs, slots)
	}
	// Each constant is (count, value) pairs (src/core/he/lattigo.ts: constRuns), expanded when used.
	consts := make([][]float64, len(job.Consts))
	for i, c := range job.Consts {
		if c[0] < 0 || c[1] <= 0 || c[0]+2*c[1] > len(constVals) {
			return fmt.Errorf("constant %d lies outside consts.bin", i)
		}
		consts[i] = constVals[c[0] : c[0]+2*c[1]]
		n := 0
		for k := 0; k < len(consts[i]); k += 2 {
			count := consts[i][k]
			if count < 1 || count != math.Trunc(count) || n+int(count) > slots {
				return fmt.Errorf("constant %d: a run of %v values does not fit %d slots", i, count, slots)
			}
			n += int(count)
		}
	}

	t0 := time.Now()
	kgen := rlwe.NewKeyGenerator(params)
	sk, pk := kgen.GenKeyPairNew()
	rlk := kgen.GenRelinearizationKeyNew(sk)
	galEls := make([]uint64, 0, len(job.Rotations))
	for _, k := range job.Rotations {
		galEls = append(galEls, params.GaloisElement(k))
	}
	gks := kgen.GenGaloisKeysNew(galEls, sk)
	evk := rlwe.NewMemEvaluationKeySet(rlk, gks...)
	eval := ckks.NewEvaluator(params, evk)
	var btp *bootstrapping.Evaluator
	var btpBytes int
	if btpParams != nil {
		bk, _, err := btpParams.GenEvaluationKeys(sk)
		if err != nil {
			return err
		}
		btpBytes = bk.BinarySize()
		if btp, err = bootstrapping.NewEvaluator(*btpParams, bk); err != nil {
			return err
		}
	}
	galBytes := 0
	for _, g := range gks {
		galBytes += g.BinarySize()
	}
	emit(event{"type": "keys", "seconds": time.Since(t0).Seconds(), "security": security,
		"bytes": event{"publicKey": pk.BinarySize(), "relinKeys": rlk.BinarySize(), "galoisKeys": galBytes, "bootstrappingKeys": btpBytes}})

	enc := ckks.NewEncoder(params)
	encryptor := rlwe.NewEncryptor(params, pk)
	decryptor := rlwe.NewDecryptor(params, sk)
	// Kept only for the next runs: a single run encodes each constant once anyway.
	budget := cacheBudget()
	if job.Runs < 2 {
		budget = 0
	}
	plains := newPlainCache(budget)
	encodeConst := func(w *worker, c int, level int, scale float64) (*rlwe.Plaintext, error) {
		return plains.get(plainKey{c, level, scale}, func() (*rlwe.Plaintext, error) {
			pt := ckks.NewPlaintext(params, level)
			pt.Scale = rlwe.NewScale(scale)
			return pt, w.enc.Encode(spread(expand(consts[c]), job.B, slots), pt)
		})
	}
	nw := workers(len(job.Ops))
	ws := make([]*worker, nw)
	// The first worker uses the originals: each copy has buffers of its own (a bootstrapper's are
	// hundreds of megabytes at N=2^16).
	ws[0] = &worker{eval: eval, enc: enc, dec: decryptor, btp: btp}
	for i := 1; i < nw; i++ {
		ws[i] = &worker{eval: eval.ShallowCopy(), enc: enc.ShallowCopy(), dec: decryptor.ShallowCopy()}
		if btp != nil {
			ws[i].btp = bootstrapperCopy(btp)
		}
	}
	decode := func(w *worker, ct *rlwe.Ciphertext) []float64 {
		v := make([]float64, slots)
		if err := w.enc.Decode(w.dec.DecryptNew(ct), v); err != nil {
			panic(err)
		}
		return v
	}
	sched, err := newSchedule(job.Ops, job.Inputs)
	if err != nil {
		return err
	}

	out, err := os.Create(filepath.Join(dir, "outputs.bin"))
	if err != nil {
		return err
	}
	defer out.Close()
	for run := 0; run < job.Runs; run++ {
		regs := make([]*rlwe.Ciphertext, sched.registers)
		tr := time.Now()
		for i := 0; i < job.Inputs; i++ {
			pt := ckks.NewPlaintext(params, params.MaxLevel())
			off := (run*job.Inputs + i) * slots
			if err := enc.Encode(inputVals[off:off+slots], pt); err != nil {
				return err
			}
			if regs[i], err = encryptor.EncryptNew(pt); err != nil {
				return err
			}
		}
		tStep := time.Now()
		var boots atomic.Int64
		// The wall time while at least one bootstrap ran in the step: bootstraps on several
		// workers overlap, so the step's time less this is the time of its own operations.
		var span struct {
			sync.Mutex
			active int
			since  time.Time
			total  time.Duration
		}
		bootBegin := func() {
			span.Lock()
			if span.active == 0 {
				span.since = time.Now()
			}
			span.active++
			span.Unlock()
		}
		bootEnd := func() {
			span.Lock()
			if span.active--; span.active == 0 {
				span.total += time.Since(span.since)
			}
			span.Unlock()
		}
		// One operation on a worker's own evaluator, encoder and bootstrapper; registers are
		// written once (the trace is in SSA form) and the schedule orders every read before the
		// operation that frees it.
		exec := func(w *worker, idx int) error {
			op := job.Ops[idx]
			var a, b, res *rlwe.Ciphertext
			var err error
			if op.Op == "mark" {
				// A mark runs alone (schedule.run): no bootstrap is under way.
				emit(event{"type": "mark", "run": run, "name": op.Name, "seconds": time.Since(tStep).Seconds(), "bootSeconds": span.total.Seconds()})
				tStep = time.Now()
				span.total = 0
				return nil
			}
			if op.Op != "const" {
				if a = regs[op.A]; a == nil {
					return fmt.Errorf("op %d (%s): register %d is not live", idx, op.Op, op.A)
				}
			}
			if op.Op == "add" || op.Op == "sub" || op.Op == "mul" {
				if b = regs[op.B]; b == nil {
					return fmt.Errorf("op %d (%s): register %d is not live", idx, op.Op, op.B)
				}
			}
			switch op.Op {
			case "rot":
				res, err = w.eval.RotateNew(a, int(op.K))
			case "mulpt":
				var pt *rlwe.Plaintext
				if pt, err = encodeConst(w, op.C, a.Level(), op.S); err == nil {
					res, err = w.eval.MulNew(a, pt)
				}
			case "rescale":
				res = ckks.NewCiphertext(params, a.Degree(), a.Level())
				err = w.eval.Rescale(a, res)
			case "add":
				res, err = w.eval.AddNew(a, b)
			case "sub":
				res, err = w.eval.SubNew(a, b)
			case "addpt":
				// At a's scale and level, as Lattigo encodes a vector operand.
				res, err = w.eval.AddNew(a, spread(expand(consts[op.C]), job.B, slots))
			case "addc":
				// Lattigo v6.1.1 adds a scalar into a new ciphertext without its scale (AddNew
				// allocates at the default scale; Add's scalar case copies no metadata): a's is kept.
				if res, err = w.eval.AddNew(a, op.K); err == nil {
					res.Scale = a.Scale
				}
			case "mul":
				if res, err = w.eval.MulRelinNew(a, b); err == nil {
					err = w.eval.Rescale(res, res)
				}
			case "mulc":
				pt := ckks.NewPlaintext(params, a.Level())
				pt.Scale = rlwe.NewScale(op.S)
				vals := make([]float64, slots)
				for i := range vals {
					vals[i] = op.K
				}
				if err = w.enc.Encode(vals, pt); err == nil {
					if res, err = w.eval.MulNew(a, pt); err == nil {
						err = w.eval.Rescale(res, res)
					}
				}
			case "neg":
				res, err = w.eval.MulNew(a, -1)
			case "drop":
				res = w.eval.DropLevelNew(a, a.Level()-op.Level)
			case "const":
				res = ckks.NewCiphertext(params, 1, op.Level)
				res.Scale = rlwe.NewScale(op.S)
				err = w.eval.Add(res, op.K, res)
			case "boot":
				if w.btp == nil {
					return fmt.Errorf("op %d: the trace bootstraps, and the job's parameters have no bootstrapping", idx)
				}
				tb := time.Now()
				var before []float64
				if job.Precision {
					before = decode(w, a)
				}
				bootBegin()
				// On a copy: Lattigo's Bootstrap scales its input down in place (ScaleDown), and
				// another value of the program may still hold that register (a stride's view).
				res, err = w.btp.Bootstrap(a.CopyNew())
				bootEnd()
				if err != nil {
					break
				}
				if a.Level() == 0 {
					res.Scale = res.Scale.Mul(levelZeroError(params, btpParams, a.Scale))
				}
				// The trace's scale for the result (trace.ts: TraceRecorder.bootstrap) must be this one.
				if op.S > 0 && math.Abs(res.Scale.Float64()/op.S-1) > 1e-9 {
					err = fmt.Errorf("the bootstrapped scale is 2^%.9f, the trace's 2^%.9f", math.Log2(res.Scale.Float64()), math.Log2(op.S))
					break
				}
				boots.Add(1)
				// Numbered in the trace's order, whichever worker ran it first.
				ev := event{"type": "boot", "run": run, "index": sched.bootIndex[idx], "seconds": time.Since(tb).Seconds(), "level": res.Level()}
				if job.Precision {
					after := decode(w, res)
					e := 0.0
					for i := range after {
						e = math.Max(e, math.Abs(after[i]-before[i]))
					}
					ev["maxError"] = e
					ev["precisionBits"] = -math.Log2(math.Max(e, 1e-18))
				}
				emit(ev)
			case "free":
				if op.A >= job.Inputs {
					regs[op.A] = nil
				}
				return nil
			default:
				return fmt.Errorf("op %d: unknown operation %q", idx, op.Op)
			}
			if err != nil {
				return fmt.Errorf("op %d (%s, level %d): %w", idx, op.Op, a.Level(), err)
			}
			if op.InPlace && op.A >= job.Inputs {
				regs[op.A] = nil
			}
			regs[op.Out] = res
			return nil
		}
		if err := sched.run(ws, exec); err != nil {
			return err
		}
		res := regs[job.Output]
		if res == nil {
			return fmt.Errorf("the output register %d is not live", job.Output)
		}
		vals := decode(ws[0], res)
		n := job.OutLength
		if n <= 0 || n > slots {
			n = slots
		}
		buf := make([]byte, 8*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(vals[i]))
		}
		if _, err := out.Write(buf); err != nil {
			return err
		}
		emit(event{"type": "run", "run": run, "seconds": time.Since(tr).Seconds(), "level": res.Level(), "logScale": math.Log2(res.Scale.Float64()), "bootstraps": boots.Load(), "workers": nw})
	}
	emit(event{"type": "done", "peakRssMB": peakRSSMB()})
	return nil
}

// peakRSSMB reads the process's peak resident memory (Linux; 0 where it cannot).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	var kb float64
	for _, line := range splitLines(string(b)) {
		if n, _ := fmt.Sscanf(line, "VmHWM: %f kB", &kb); n == 1 {
			return kb / 1024
		}
	}
	return 0
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := range s {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// levelZeroError is the factor by which Lattigo's bootstrapping multiplies a message it takes at
// level 0 with scale s. ScaleDown brings the scale to q0 / r (r: the message ratio) by an integer
// product, round(q0 / (s r)), and a rescale; at level 0 there is no prime to rescale by, so the
// scale misses q0 / r by that integer's rounding, and the PREC64 path drops the error factor it
// computes (circuits/ckks/bootstrapping/evaluator.go: Evaluate, ScaleDown): the value comes back
// times s round(q0 / (s r)) r / q0, up to 1 / (2 round(q0 / (s r))) off.
// Multiplying the result's scale by the factor makes it exact again at no level.
func levelZeroError(params ckks.Parameters, btp *bootstrapping.Parameters, s rlwe.Scale) rlwe.Scale {
	target := rlwe.NewScale(params.Q()[0]).Div(rlwe.NewScale(messageRatio(btp)))
	up := rlwe.NewScale(params.Q()[0]).Div(s).Div(rlwe.NewScale(messageRatio(btp)))
	return s.Mul(rlwe.NewScale(up.BigInt())).Div(target)
}
