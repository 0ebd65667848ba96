package chaos

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func TestMaxGap(t *testing.T) {
	base := time.Unix(1000, 0)
	at := func(ms ...int) []time.Time {
		var out []time.Time
		for _, m := range ms {
			out = append(out, base.Add(time.Duration(m)*time.Millisecond))
		}
		return out
	}
	ms := func(m int) time.Time { return base.Add(time.Duration(m) * time.Millisecond) }
	for _, tc := range []struct {
		name     string
		succ     []time.Time
		from, to time.Time
		want     time.Duration
	}{
		{"steady", at(0, 10, 20, 30, 40), ms(5), ms(35), 10 * time.Millisecond},
		{"hole after the fault", at(0, 10, 900, 910), ms(15), ms(1000), 885 * time.Millisecond},
		{"nothing after the fault", at(0, 10), ms(15), ms(500), 485 * time.Millisecond},
		{"cut at the next fault", at(0, 2000), ms(100), ms(600), 500 * time.Millisecond},
		{"empty", nil, ms(0), ms(100), 100 * time.Millisecond},
	} {
		if got := maxGap(tc.succ, tc.from, tc.to); got != tc.want {
			t.Errorf("%s: maxGap = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// The register model accepts what a register can do and rejects what it
// cannot, with writes of unknown outcome free to have happened or not.
func TestRegisterModel(t *testing.T) {
	op := func(client int, in regInput, out regOutput, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret}
	}
	set := func(v string) regInput { return regInput{op: opSet, value: v} }
	get := regInput{op: opGet}
	cas := func(from, to string) regInput { return regInput{op: opCAS, expected: from, value: to} }
	const never = int64(1) << 62
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"read your write", []porcupine.Operation{
			op(0, set("a"), regOutput{}, 0, 10), op(1, get, regOutput{value: "a"}, 20, 30)}, true},
		{"stale read", []porcupine.Operation{
			op(0, set("a"), regOutput{}, 0, 10), op(0, set("b"), regOutput{}, 20, 30), op(1, get, regOutput{value: "a"}, 40, 50)}, false},
		{"cas applies", []porcupine.Operation{
			op(0, set("a"), regOutput{}, 0, 10), op(1, cas("a", "b"), regOutput{}, 20, 30), op(2, get, regOutput{value: "b"}, 40, 50)}, true},
		{"cas cannot mismatch on the expected value", []porcupine.Operation{
			op(0, set("a"), regOutput{}, 0, 10), op(1, cas("a", "b"), regOutput{mismatch: true}, 20, 30)}, false},
		{"unknown write may have happened", []porcupine.Operation{
			op(0, set("a"), regOutput{unknown: true}, 0, never), op(1, get, regOutput{value: "a"}, 20, 30)}, true},
		{"unknown write may not have happened", []porcupine.Operation{
			op(0, set("a"), regOutput{unknown: true}, 0, never), op(1, get, regOutput{}, 20, 30)}, true},
		{"a value nobody wrote", []porcupine.Operation{
			op(0, set("a"), regOutput{}, 0, 10), op(1, get, regOutput{value: "z"}, 20, 30)}, false},
	} {
		if got := porcupine.CheckOperations(registerModel, tc.ops); got != tc.ok {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.ok)
		}
	}
}

func TestLedgerCheck(t *testing.T) {
	h := newHistory()
	h.acked, h.unknown = 6, 3
	h.incrs = []incrRecord{{delta: 2, value: 2}, {delta: 4, value: 6}}
	if p := checkLedger(h, 7); len(p) != 0 {
		t.Errorf("final 7 within [6, 9]: %v", p)
	}
	if p := checkLedger(h, 5); len(p) == 0 {
		t.Error("final 5 below the acknowledged 6 passed")
	}
	if p := checkLedger(h, 10); len(p) == 0 {
		t.Error("final 10 above acknowledged + unknown passed")
	}
	h.incrs = append(h.incrs, incrRecord{delta: 1, value: 6}) // answered twice
	h.acked = 7
	if p := checkLedger(h, 7); len(p) == 0 {
		t.Error("two increments answered with the same value passed")
	}
}
