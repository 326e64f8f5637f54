// Package controllers holds cnimedic's controllers, one subpackage each, each owning its events and metrics:
//
//	policy/       RemediationPolicy status: covered nodes, signature validity, storms, counts
//	detection/    evidence → one NodeRemediation per broken node
//	remediation/  NodeRemediation workflow: approval, drain, executor, verification, uncordon
package controllers
