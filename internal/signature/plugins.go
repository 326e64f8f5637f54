package signature

// referencePlugins are the plugins of github.com/containernetworking/plugins, the only binaries cnimedic installs:
// the executor image ships them with their sha256 sums. flannel's plugin left that repository for flannel-io's, so
// it is a vendor plugin here even though old bundles carried it.
var referencePlugins = map[string]bool{
	// main
	"bridge": true, "dummy": true, "host-device": true, "ipvlan": true, "loopback": true, "macvlan": true,
	"ptp": true, "tap": true, "vlan": true, "win-bridge": true, "win-overlay": true,
	// ipam
	"dhcp": true, "host-local": true, "static": true,
	// meta
	"bandwidth": true, "firewall": true, "portmap": true, "sbr": true, "tuning": true, "vrf": true,
}

// vendorPlugins maps the plugin types of the common CNI providers to the provider whose node agent (usually a
// DaemonSet) installs and serves them. A missing vendor binary or an absent agent is that provider's business.
var vendorPlugins = map[string]string{
	"flannel":             "flannel",
	"calico":              "calico",
	"calico-ipam":         "calico",
	"cilium-cni":          "cilium",
	"cilium":              "cilium",
	"weave-net":           "weave",
	"weave-ipam":          "weave",
	"antrea":              "antrea",
	"multus":              "multus",
	"multus-shim":         "multus",
	"aws-cni":             "aws-vpc-cni",
	"egress-cni":          "aws-vpc-cni",
	"azure-vnet":          "azure-cni",
	"azure-vnet-ipam":     "azure-cni",
	"azure-cns":           "azure-cni",
	"kube-ovn":            "kube-ovn",
	"ovn-k8s-cni-overlay": "ovn-kubernetes",
	"openshift-sdn":       "openshift-sdn",
	"istio-cni":           "istio",
	"linkerd-cni":         "linkerd",
	"terway":              "terway",
	"whereabouts":         "whereabouts",
	"ovs":                 "ovs-cni",
	"sriov":               "sriov-cni",
}

// IsReferencePlugin reports whether pluginType is a containernetworking reference plugin, which cnimedic may
// install from the executor image's bundle.
func IsReferencePlugin(pluginType string) bool {
	return referencePlugins[pluginType]
}

// Vendor returns the CNI provider whose agent serves pluginType (calico for calico-ipam, cilium for cilium-cni).
func Vendor(pluginType string) (string, bool) {
	v, ok := vendorPlugins[pluginType]
	return v, ok
}

// IsVendorPlugin reports whether pluginType belongs to a known CNI provider rather than to the reference plugins.
func IsVendorPlugin(pluginType string) bool {
	_, ok := vendorPlugins[pluginType]
	return ok
}
