// Package signature names the failure behind a pod-sandbox error message: one data-driven catalog of the built-in
// failure signatures (catalog.go), the policy's custom signatures compiled next to them (Compile), and a matcher
// cheap enough to see every Warning event of a large cluster.
//
// A message is classified in three steps:
//
//  1. the event reason must be one a signature accepts (a string comparison; most events stop here);
//  2. one pass of an Aho-Corasick automaton over the raw message finds which literal pieces it contains; the pieces
//     are derived from the signatures' regular expressions themselves (prefilter.go), so they can never disagree
//     with them, and a message that contains none of them is rejected without allocating;
//  3. the regular expressions whose pieces are all present run, in precedence order, over the normalised message
//     (escaped quotes unescaped, whitespace runs folded into one space); the first that matches names the
//     signature, and its named groups plus the signature's extractors become the parameters.
//
// Precedence is the catalog's order, most specific cause first, with a policy's custom signatures before all the
// built-ins: a message often carries a consequence next to its cause (a missing flannel binary makes the runtime
// report "cni config uninitialized"), and the cause is what the repair must address.
package signature
