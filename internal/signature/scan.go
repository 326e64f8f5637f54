package signature

// maxPieces is the number of distinct pieces a scanner tracks: the width of pieceSet.
const maxPieces = 256

// pieceSet is a set of piece indexes. A fixed array keeps scanning free of allocation.
type pieceSet [maxPieces / 64]uint64

func (s *pieceSet) add(i int)         { s[i/64] |= 1 << (i % 64) }
func (s *pieceSet) union(o *pieceSet) { s[0] |= o[0]; s[1] |= o[1]; s[2] |= o[2]; s[3] |= o[3] }
func (s *pieceSet) empty() bool       { return s[0]|s[1]|s[2]|s[3] == 0 }
func (s *pieceSet) has(i int) bool    { return s[i/64]&(1<<(i%64)) != 0 }
func (s *pieceSet) contains(o *pieceSet) bool {
	return s[0]&o[0] == o[0] && s[1]&o[1] == o[1] && s[2]&o[2] == o[2] && s[3]&o[3] == o[3]
}

// scanner finds in one pass which pieces a message contains, folding ASCII case and reading any run of whitespace
// as one space (as normalize does). It is an Aho-Corasick automaton flattened into a transition table over byte
// classes, so the loop does two table loads per byte and never allocates:
//   - a state is stored as the offset of its row in the table, which saves a multiplication per byte;
//   - rows of states that complete a piece come last, so "did this byte complete a piece" is one comparison;
//   - a state entered by a whitespace byte loops on whitespace, which folds whitespace runs without a branch.
type scanner struct {
	class  [256]uint8
	nclass int
	next   []uint32 // next[row+class] is the row of the next state
	// Rows at or after firstOut belong to states that complete at least one piece: out[(row-firstOut)/nclass].
	firstOut uint32
	out      []pieceSet
	// maxLen is the longest piece, in the scanner's alphabet.
	maxLen int
}

// newScanner builds the automaton for pieces, which must already be in scanner form (see scannerForm) and number
// at most maxPieces, each at most maxPieceLen long.
func newScanner(pieces []string) *scanner {
	sc := &scanner{}
	// Byte classes: one per distinct byte of the pieces, upper-case letters sharing their lower case's class,
	// every whitespace byte sharing the space's class, class 0 for everything else.
	sc.nclass = 1
	assign := func(c byte) uint8 {
		if sc.class[c] == 0 {
			sc.class[c] = uint8(sc.nclass)
			sc.nclass++
		}
		return sc.class[c]
	}
	spaceClass := assign(' ')
	for _, p := range pieces {
		sc.maxLen = max(sc.maxLen, len(p))
	}
	for _, p := range pieces {
		for i := 0; i < len(p); i++ {
			assign(p[i])
		}
	}
	for c := 0; c < 256; c++ {
		b := byte(c)
		switch {
		case isSpace(b):
			sc.class[c] = spaceClass
		case 'A' <= b && b <= 'Z':
			sc.class[c] = sc.class[b+'a'-'A']
		}
	}

	// The trie, in build order (state 0 is the root).
	type node struct {
		child map[uint8]int
		class uint8 // of the byte that leads to it
		fail  int
		out   pieceSet
	}
	nodes := []node{{child: map[uint8]int{}}}
	for idx, p := range pieces {
		s := 0
		for i := 0; i < len(p); i++ {
			c := sc.class[p[i]]
			n, ok := nodes[s].child[c]
			if !ok {
				n = len(nodes)
				nodes = append(nodes, node{child: map[uint8]int{}, class: c})
				nodes[s].child[c] = n
			}
			s = n
		}
		nodes[s].out.add(idx)
	}

	// Failure links and full transitions, breadth first so that a state's failure target is complete before it.
	delta := make([][]int, len(nodes))
	for i := range delta {
		delta[i] = make([]int, sc.nclass)
	}
	queue := []int{}
	for c := 0; c < sc.nclass; c++ {
		if n, ok := nodes[0].child[uint8(c)]; ok {
			delta[0][c] = n
			nodes[n].fail = 0
			queue = append(queue, n)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		f := nodes[s].fail
		nodes[s].out.union(&nodes[f].out)
		for c := 0; c < sc.nclass; c++ {
			if n, ok := nodes[s].child[uint8(c)]; ok {
				nodes[n].fail = delta[f][c]
				delta[s][c] = n
				queue = append(queue, n)
			} else {
				delta[s][c] = delta[f][c]
			}
		}
	}

	// A state whose last byte was whitespace stays put on more whitespace: the run reads as one space. (Every
	// transition on a class lands on a node whose last byte has that class, or on the root; the root loops on
	// whitespace anyway when no piece starts with a space.)
	for s := range nodes {
		if s != 0 && nodes[s].class == spaceClass {
			delta[s][spaceClass] = s
		}
	}

	// Renumber: the root stays 0, states without output next, states with output last.
	order := make([]int, len(nodes)) // old -> new
	newID := 0
	for pass := 0; pass < 2; pass++ {
		for s := range nodes {
			hasOut := !nodes[s].out.empty()
			if (pass == 0) == hasOut {
				continue
			}
			order[s] = newID
			newID++
		}
	}
	// The root has no output (pieces are never empty), so it got 0 in the first pass.
	firstOut := len(nodes)
	for s := range nodes {
		if !nodes[s].out.empty() && order[s] < firstOut {
			firstOut = order[s]
		}
	}
	sc.firstOut = uint32(firstOut * sc.nclass)
	sc.next = make([]uint32, len(nodes)*sc.nclass)
	sc.out = make([]pieceSet, len(nodes)-firstOut)
	for s := range nodes {
		ns := order[s]
		for c := 0; c < sc.nclass; c++ {
			sc.next[ns*sc.nclass+c] = uint32(order[delta[s][c]] * sc.nclass)
		}
		if ns >= firstOut {
			sc.out[ns-firstOut] = nodes[s].out
		}
	}
	return sc
}

// scan returns the pieces msg contains. The table walk is a chain of dependent loads, so its speed is bounded by
// load latency rather than by the work per byte: a long message is walked as two halves in one loop, two
// independent chains the processor overlaps. The second half starts early enough that a piece ending in it is
// seen whole (see splitPoint).
func (sc *scanner) scan(msg string) pieceSet {
	var found pieceSet
	if len(sc.out) == 0 {
		return found
	}
	mid := len(msg) / 2
	start := sc.splitPoint(msg, mid)
	if start < 0 {
		sc.walk(msg, &found)
		return found
	}
	a, b := msg[:mid], msg[start:]
	next, class, firstOut, nclass := sc.next, &sc.class, sc.firstOut, uint32(sc.nclass)
	ra, rb := uint32(0), uint32(0)
	for i := 0; i < len(a); i++ {
		ra = next[ra+uint32(class[a[i]])]
		rb = next[rb+uint32(class[b[i]])]
		if ra >= firstOut {
			found.union(&sc.out[(ra-firstOut)/nclass])
		}
		if rb >= firstOut {
			found.union(&sc.out[(rb-firstOut)/nclass])
		}
	}
	for i := len(a); i < len(b); i++ {
		rb = next[rb+uint32(class[b[i]])]
		if rb >= firstOut {
			found.union(&sc.out[(rb-firstOut)/nclass])
		}
	}
	return found
}

// walk is the plain one-chain scan.
func (sc *scanner) walk(msg string, found *pieceSet) {
	next, class, firstOut, nclass := sc.next, &sc.class, sc.firstOut, uint32(sc.nclass)
	row := uint32(0)
	for i := 0; i < len(msg); i++ {
		row = next[row+uint32(class[msg[i]])]
		if row >= firstOut {
			found.union(&sc.out[(row-firstOut)/nclass])
		}
	}
}

// splitPoint returns where the second half's walk starts so that every piece occurrence that ends at or after mid
// starts at or after it: maxLen-1 characters before mid, counting a whitespace run as the one character the
// scanner reads it as. It returns -1 when the message is too short for two walks to pay.
func (sc *scanner) splitPoint(msg string, mid int) int {
	if mid < 2*sc.maxLen {
		return -1
	}
	start, chars := mid, 0
	for start > 0 && chars < sc.maxLen-1 {
		start--
		if isSpace(msg[start]) {
			for start > 0 && isSpace(msg[start-1]) {
				start--
			}
		}
		chars++
	}
	return start
}
