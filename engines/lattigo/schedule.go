package main

import (
	"container/heap"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"

	"github.com/tuneinsight/lattigo/v6/circuits/ckks/bootstrapping"
	"github.com/tuneinsight/lattigo/v6/circuits/ckks/dft"
	"github.com/tuneinsight/lattigo/v6/circuits/ckks/mod1"
	"github.com/tuneinsight/lattigo/v6/circuits/ckks/polynomial"
	"github.com/tuneinsight/lattigo/v6/core/rlwe"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
)

// worker holds what one goroutine needs of its own: Lattigo's evaluators, encoder and
// decryptor keep temporary buffers, and their ShallowCopy shares the keys and tables.
type worker struct {
	eval *ckks.Evaluator
	enc  *ckks.Encoder
	dec  *rlwe.Decryptor
	btp  *bootstrapping.Evaluator
}

// bootstrapperCopy is a bootstrapping evaluator another goroutine can use beside btp. Lattigo
// v6.1.1's ShallowCopy builds the copy's DFT and EvalMod evaluators on the residual parameters
// instead of the bootstrapping ones (its NewEvaluator uses the latter), and the copy then panics
// in CoeffsToSlots ("level cannot be larger than max level"): they are rebuilt here as
// NewEvaluator builds them.
func bootstrapperCopy(btp *bootstrapping.Evaluator) *bootstrapping.Evaluator {
	c := btp.ShallowCopy()
	params := btp.BootstrappingParameters
	c.DFTEvaluator = dft.NewEvaluator(params, c.Evaluator)
	c.Mod1Evaluator = mod1.NewEvaluator(c.Evaluator, polynomial.NewEvaluator(params, c.Evaluator), c.Mod1Parameters)
	return c
}

// workers is how many goroutines run a trace's independent operations: HE_APPROX_ENGINE_THREADS
// if set, else the CPUs Go may use (a short trace gains nothing from more than one).
func workers(ops int) int {
	if v, err := strconv.Atoi(os.Getenv("HE_APPROX_ENGINE_THREADS")); err == nil && v >= 1 {
		return v
	}
	if ops < 64 {
		return 1
	}
	return runtime.GOMAXPROCS(0)
}

// schedule is a trace cut at its marks (one per program step) into segments whose operations
// run as soon as what they read exists: the trace is in SSA form (every register written once),
// so an operation waits for the producers of its operands and, if it frees a register (free, or
// an in-place sum), for every earlier reader of it. A mark waits for its whole segment, so the
// per-step times stay the step's own.
type schedule struct {
	ops       []Op
	segments  [][]int     // operation indices, marks excluded
	marks     []int       // the mark after each segment (-1: none)
	deps      [][]int     // per operation, the operations of its segment waiting for it
	indegree  []int       // per operation, how many it waits for
	registers int         // registers the trace writes
	bootIndex map[int]int // bootstrap op -> its number (1-based) in trace order
}

func newSchedule(ops []Op, inputs int) (*schedule, error) {
	s := &schedule{ops: ops, deps: make([][]int, len(ops)), indegree: make([]int, len(ops)), registers: inputs, bootIndex: map[int]int{}}
	producer := map[int]int{}
	readers := map[int][]int{}
	seg := []int{}
	segStart := 0
	boots := 0
	link := func(from, to int) {
		if from >= segStart {
			s.deps[from] = append(s.deps[from], to)
			s.indegree[to]++
		}
	}
	for i, op := range ops {
		if op.Op == "mark" {
			s.segments = append(s.segments, seg)
			s.marks = append(s.marks, i)
			seg = []int{}
			segStart = i + 1
			continue
		}
		var reads []int
		switch op.Op {
		case "const", "free":
		case "add", "sub", "mul":
			reads = []int{op.A, op.B}
		default:
			reads = []int{op.A}
		}
		waits := map[int]bool{}
		for _, r := range reads {
			if r < 0 || r >= len(ops)+inputs {
				return nil, fmt.Errorf("op %d (%s) reads register %d, which no operation writes", i, op.Op, r)
			}
			if p, ok := producer[r]; ok {
				waits[p] = true
			}
			readers[r] = append(readers[r], i)
		}
		if op.Op == "free" || op.InPlace {
			if p, ok := producer[op.A]; ok {
				waits[p] = true
			}
			for _, r := range readers[op.A] {
				if r != i {
					waits[r] = true
				}
			}
		}
		for w := range waits {
			link(w, i)
		}
		if op.Op != "free" {
			if _, dup := producer[op.Out]; dup || op.Out < inputs {
				return nil, fmt.Errorf("op %d (%s) writes register %d a second time", i, op.Op, op.Out)
			}
			producer[op.Out] = i
			if op.Out+1 > s.registers {
				s.registers = op.Out + 1
			}
		}
		if op.Op == "boot" {
			boots++
			s.bootIndex[i] = boots
		}
		seg = append(seg, i)
	}
	if len(seg) > 0 {
		s.segments = append(s.segments, seg)
		s.marks = append(s.marks, -1)
	}
	return s, nil
}

// ready is a min-heap of operation indices: of the operations that can run, the earliest in the
// trace goes first, so the ciphertexts alive stay close to what a sequential run holds.
type ready []int

func (h ready) Len() int           { return len(h) }
func (h ready) Less(i, j int) bool { return h[i] < h[j] }
func (h ready) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ready) Push(x any)        { *h = append(*h, x.(int)) }
func (h *ready) Pop() any          { old := *h; x := old[len(old)-1]; *h = old[:len(old)-1]; return x }

// run executes every segment on the workers, then its mark alone; the first error stops it.
func (s *schedule) run(ws []*worker, exec func(w *worker, idx int) error) error {
	indeg := append([]int(nil), s.indegree...)
	for k, seg := range s.segments {
		if err := s.runSegment(ws, seg, indeg, exec); err != nil {
			return err
		}
		if s.marks[k] >= 0 {
			if err := exec(ws[0], s.marks[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *schedule) runSegment(ws []*worker, seg []int, indeg []int, exec func(w *worker, idx int) error) error {
	if len(seg) == 0 {
		return nil
	}
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	h := &ready{}
	for _, i := range seg {
		if indeg[i] == 0 {
			heap.Push(h, i)
		}
	}
	left := len(seg)
	var first error
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			for {
				mu.Lock()
				for h.Len() == 0 && left > 0 {
					cond.Wait()
				}
				if left == 0 {
					mu.Unlock()
					return
				}
				i := heap.Pop(h).(int)
				failed := first != nil
				mu.Unlock()
				var err error
				if !failed {
					err = exec(w, i)
				}
				mu.Lock()
				if err != nil && first == nil {
					first = err
				}
				left--
				for _, d := range s.deps[i] {
					indeg[d]--
					if indeg[d] == 0 {
						heap.Push(h, d)
					}
				}
				cond.Broadcast()
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	return first
}

// plainCache keeps encoded constants (a layer's weights at a level and scale) for the next runs,
// up to a budget of bytes: a ResNet's weight plaintexts at N=2^16 would take tens of gigabytes,
// so beyond it they are encoded again when used. Each is encoded once even when two workers ask.
type plainCache struct {
	mu      sync.Mutex
	entries map[plainKey]*plainEntry
	budget  int64
	used    int64
}

type plainKey struct {
	c     int
	level int
	scale float64
}

type plainEntry struct {
	once sync.Once
	pt   *rlwe.Plaintext
	err  error
}

// cacheBudget: HE_APPROX_ENGINE_CACHE_MB if set, else 512 MB (beside a ResNet's 8 GB of
// bootstrapping keys, more would push a 24 GB machine out of memory).
func cacheBudget() int64 {
	if v, err := strconv.Atoi(os.Getenv("HE_APPROX_ENGINE_CACHE_MB")); err == nil && v >= 0 {
		return int64(v) << 20
	}
	return 512 << 20
}

func newPlainCache(budget int64) *plainCache {
	return &plainCache{entries: map[plainKey]*plainEntry{}, budget: budget}
}

func (c *plainCache) get(k plainKey, make func() (*rlwe.Plaintext, error)) (*rlwe.Plaintext, error) {
	c.mu.Lock()
	e, ok := c.entries[k]
	if !ok {
		if c.used >= c.budget {
			c.mu.Unlock()
			return make()
		}
		e = &plainEntry{}
		c.entries[k] = e
	}
	c.mu.Unlock()
	e.once.Do(func() {
		e.pt, e.err = make()
		if e.err == nil {
			c.mu.Lock()
			c.used += int64(e.pt.BinarySize())
			c.mu.Unlock()
		}
	})
	return e.pt, e.err
}
