package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"
)

// The digests approval binds. Both sides compute them with these functions: the manager records RunDigest in the
// status and the approval, and hands the executor PlanDigest as an argument of its pod (the pod's spec cannot be
// changed once created, its annotations can), so `remediator apply` refuses a plan file that is not the approved
// plan.

// PlanDigest is "sha256:" and the hex sha256 of the plan's JSON encoding. The encoding of a Plan is deterministic
// (struct fields in order, no maps), so a plan read back from its JSON gives the same digest.
func PlanDigest(p Plan) string {
	b, err := json.Marshal(p)
	if err != nil { // a Plan holds only strings, slices and pointers to them: it always encodes
		panic("v1alpha1: a Plan did not encode: " + err.Error())
	}
	return sha256Hex(b)
}

// RunDigest is the digest of what a repair will run: on which node, under which policy and generation, which
// action, which plan and with which executor image. Any change of one of them changes it.
func RunDigest(node, policy string, policyGeneration int64, action RepairAction, image string, plan *Plan) string {
	planDigest := ""
	if plan != nil {
		planDigest = PlanDigest(*plan)
	}
	// One field a line, each quoted: no two different inputs give the same text.
	text := strconv.Quote(node) + "\n" + strconv.Quote(policy) + "\n" + strconv.FormatInt(policyGeneration, 10) + "\n" +
		strconv.Quote(string(action)) + "\n" + strconv.Quote(image) + "\n" + strconv.Quote(planDigest) + "\n"
	return sha256Hex([]byte(text))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CurrentPreview is status.preview when it previewed the plan recorded now, and nil otherwise: a preview of an
// earlier plan is never shown as what will run.
func (st *NodeRemediationStatus) CurrentPreview() *PlanPreview {
	if st.Preview == nil || st.Plan == nil || st.Preview.PlanDigest != PlanDigest(*st.Plan) {
		return nil
	}
	return st.Preview
}
