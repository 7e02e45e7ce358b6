package main

import (
	"fmt"
	"math"

	"github.com/tuneinsight/lattigo/v6/circuits/ckks/bootstrapping"
	"github.com/tuneinsight/lattigo/v6/ring"
	"github.com/tuneinsight/lattigo/v6/schemes/ckks"
	"github.com/tuneinsight/lattigo/v6/utils"
)

// Spec is what the TypeScript side asks for: the residual chain (levels of 40-bit primes above a
// 60-bit q_0, the levels a program has between bootstraps), the ring, and whether it bootstraps.
type Spec struct {
	LogN      int  `json:"logN"`
	Levels    int  `json:"levels"`
	Bootstrap bool `json:"bootstrap"`
	// Insecure: a small ring for tests only; the engine refuses it unless asked by name.
	Insecure bool `json:"insecure"`
}

// Chain is what the engine tells the TypeScript side: its primes (q_0 .. q_levels), slots,
// default scale, and how secure the parameters are.
type Chain struct {
	Primes   []uint64 `json:"primes"`
	Levels   int      `json:"levels"`
	Slots    int      `json:"slots"`
	LogScale int      `json:"logScale"`
	LogQP    float64  `json:"logQP"`
	Security string   `json:"security"`
	// MessageRatio: q0 / |m| of the bootstrapping (its ScaleDown), for the scale a bootstrap
	// returns from level 0 (run.go: levelZeroError); 0 without bootstrapping.
	MessageRatio float64 `json:"messageRatio,omitempty"`
}

// Bounds of log2(QP) for 128-bit security. Bootstrapping: Lattigo's default parameter sets use a
// ternary secret of Hamming weight 192 at N = 2^16 and are at least 128-bit secure for
// LogQP <= 1550 (circuits/ckks/bootstrapping/README.md). Without bootstrapping: the
// HomomorphicEncryption.org standard's bounds for a uniform ternary secret.
const bootstrapMaxLogQP = 1550

var standardMaxLogQP = map[int]float64{13: 218, 14: 438, 15: 881, 16: 1772, 17: 3576}

// Scheme builds the residual CKKS parameters and, when bootstrapping, Lattigo's bootstrapping
// parameters over them (the default set's circuit: CoeffsToSlots, EvalMod, SlotsToCoeffs).
func Scheme(s Spec) (ckks.Parameters, *bootstrapping.Parameters, string, error) {
	if s.Levels < 1 || s.Levels > 40 {
		return ckks.Parameters{}, nil, "", fmt.Errorf("levels must be in 1..40, got %d", s.Levels)
	}
	if s.LogN < 12 || s.LogN > 17 {
		return ckks.Parameters{}, nil, "", fmt.Errorf("logN must be in 12..17, got %d", s.LogN)
	}
	if s.Bootstrap && s.LogN < 16 && !s.Insecure {
		return ckks.Parameters{}, nil, "", fmt.Errorf("N = 2^%d is below what 128-bit bootstrapping parameters need (2^16)", s.LogN)
	}
	logQ := []int{60}
	for i := 0; i < s.Levels; i++ {
		logQ = append(logQ, 40)
	}
	lit := ckks.ParametersLiteral{LogN: s.LogN, LogQ: logQ, LogP: []int{61, 61, 61, 61, 61}, LogDefaultScale: 40}
	if s.Bootstrap {
		lit.Xs = ring.Ternary{H: 192}
	}
	params, err := ckks.NewParametersFromLiteral(lit)
	if err != nil {
		return ckks.Parameters{}, nil, "", err
	}
	security := "128-bit"
	if !s.Bootstrap {
		if bound, ok := standardMaxLogQP[s.LogN]; !ok || params.LogQP() > bound {
			if !s.Insecure {
				return ckks.Parameters{}, nil, "", fmt.Errorf("%d levels at N = 2^%d take log2(QP) = %.0f, beyond the 128-bit bound %.0f", s.Levels, s.LogN, params.LogQP(), bound)
			}
		}
		if s.Insecure {
			security = "insecure (test parameters)"
		}
		return params, nil, security, nil
	}
	btp, err := bootstrapping.NewParametersFromLiteral(params, bootstrapping.ParametersLiteral{LogN: utils.Pointy(s.LogN)})
	if err != nil {
		return ckks.Parameters{}, nil, "", err
	}
	if s.LogN < 16 {
		// As Lattigo's own examples do for smaller rings: the same precision with fewer slots.
		btp.Mod1ParametersLiteral.LogMessageRatio += 16 - s.LogN
	}
	if btp.BootstrappingParameters.LogQP() > bootstrapMaxLogQP {
		if !s.Insecure {
			return ckks.Parameters{}, nil, "", fmt.Errorf("%d levels between bootstraps take log2(QP) = %.0f in the bootstrapping circuit, beyond the %d that 128-bit security allows at N = 2^16 (at most %d levels)",
				s.Levels, btp.BootstrappingParameters.LogQP(), bootstrapMaxLogQP, maxSecureLevels(btp.BootstrappingParameters.LogQP(), s.Levels))
		}
	}
	if s.Insecure {
		security = "insecure (test parameters)"
	}
	return params, &btp, security, nil
}

// maxSecureLevels: the most 40-bit levels whose circuit stays within bootstrapMaxLogQP.
func maxSecureLevels(logQP float64, levels int) int {
	n := levels - int((logQP-bootstrapMaxLogQP+39)/40)
	if n < 0 {
		return 0
	}
	return n
}

// ChainOf reports the residual chain the programs run on.
func ChainOf(params ckks.Parameters, btp *bootstrapping.Parameters, security string) Chain {
	logQP := params.LogQP()
	if btp != nil {
		logQP = btp.BootstrappingParameters.LogQP()
	}
	c := Chain{Primes: params.Q(), Levels: params.MaxLevel(), Slots: params.MaxSlots(), LogScale: params.LogDefaultScale(), LogQP: logQP, Security: security}
	if btp != nil {
		c.MessageRatio = messageRatio(btp)
	}
	return c
}

// messageRatio is the bootstrapping's q0 / |m| (mod1.Parameters.MessageRatio, from the literal).
func messageRatio(btp *bootstrapping.Parameters) float64 {
	return math.Exp2(float64(btp.Mod1ParametersLiteral.LogMessageRatio))
}
