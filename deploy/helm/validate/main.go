// Command validate checks rendered Kubernetes manifests offline (kubeconform's schemas live on
// a site this machine cannot reach): every object of a `helm template` stream is decoded
// strictly into its typed Go struct from k8s.io/api — an unknown or misspelt field, a wrong
// type, an unparsable quantity or a duplicate key fails — and then cross-checked: names and
// labels are valid, selectors select the pod template, every volume mount has its volume,
// every probe port exists, every Service and PodDisruptionBudget selects a workload of the
// stream, a StatefulSet's serviceName is a headless Service of the stream.
//
// Usage: helm template … | validate [-name NAME]   (exit 0: valid; 1: findings on stderr)
//
// cert-manager's Certificate is not a Kubernetes API type: it is decoded into the subset of
// cert-manager.io/v1 declared below (the fields this chart uses), strictly as well.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Certificate is the subset of cert-manager.io/v1 Certificate this chart renders.
type Certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName  string   `json:"secretName"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		IPAddresses []string `json:"ipAddresses,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
			Encoding       string `json:"encoding,omitempty"`
		} `json:"privateKey,omitempty"`
		IssuerRef struct {
			Name  string `json:"name"`
			Kind  string `json:"kind,omitempty"`
			Group string `json:"group,omitempty"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// object is one decoded manifest.
type object struct {
	kind, name string
	meta       *metav1.ObjectMeta
	value      any
}

var findings []string

func fail(o object, format string, args ...any) {
	findings = append(findings, fmt.Sprintf("%s/%s: %s", o.kind, o.name, fmt.Sprintf(format, args...)))
}

// split returns the YAML documents of a stream (helm separates them with ---).
func split(r io.Reader) ([][]byte, error) {
	var docs [][]byte
	var cur bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "---") {
			flush()
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	flush()
	return docs, sc.Err()
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out.Write(l)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

// decode strictly decodes one document into the typed struct of its kind.
func decode(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return object{}, fmt.Errorf("not YAML: %w", err)
	}
	var v any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Service":
		v = &corev1.Service{}
	case "v1 Secret":
		v = &corev1.Secret{}
	case "v1 ConfigMap":
		v = &corev1.ConfigMap{}
	case "v1 ServiceAccount":
		v = &corev1.ServiceAccount{}
	case "apps/v1 StatefulSet":
		v = &appsv1.StatefulSet{}
	case "apps/v1 Deployment":
		v = &appsv1.Deployment{}
	case "policy/v1 PodDisruptionBudget":
		v = &policyv1.PodDisruptionBudget{}
	case "networking.k8s.io/v1 NetworkPolicy":
		v = &networkingv1.NetworkPolicy{}
	case "cert-manager.io/v1 Certificate":
		v = &Certificate{}
	default:
		return object{}, fmt.Errorf("unknown or unsupported kind %q (apiVersion %q)", tm.Kind, tm.APIVersion)
	}
	// UnmarshalStrict: unknown fields and duplicate keys are errors.
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	o := object{kind: tm.Kind, value: v}
	switch x := v.(type) {
	case *corev1.Service:
		o.meta = &x.ObjectMeta
	case *corev1.Secret:
		o.meta = &x.ObjectMeta
	case *corev1.ConfigMap:
		o.meta = &x.ObjectMeta
	case *corev1.ServiceAccount:
		o.meta = &x.ObjectMeta
	case *appsv1.StatefulSet:
		o.meta = &x.ObjectMeta
	case *appsv1.Deployment:
		o.meta = &x.ObjectMeta
	case *policyv1.PodDisruptionBudget:
		o.meta = &x.ObjectMeta
	case *networkingv1.NetworkPolicy:
		o.meta = &x.ObjectMeta
	case *Certificate:
		o.meta = &x.ObjectMeta
	}
	o.name = o.meta.Name
	return o, nil
}

func checkMeta(o object) {
	if o.meta.Name == "" {
		fail(o, "metadata.name is empty")
	}
	for _, e := range validation.IsDNS1123Subdomain(o.meta.Name) {
		fail(o, "metadata.name: %s", e)
	}
	if o.kind == "Service" || o.kind == "StatefulSet" {
		// Service names and StatefulSet names end up in DNS labels.
		for _, e := range validation.IsDNS1035Label(o.meta.Name) {
			fail(o, "metadata.name (a DNS label): %s", e)
		}
	}
	checkLabels(o, "metadata.labels", o.meta.Labels)
	for k := range o.meta.Annotations {
		for _, e := range validation.IsQualifiedName(k) {
			fail(o, "annotation %q: %s", k, e)
		}
	}
}

func checkLabels(o object, where string, l map[string]string) {
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			fail(o, "%s key %q: %s", where, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			fail(o, "%s[%q]=%q: %s", where, k, v, e)
		}
	}
}

// checkPod checks a pod template: labels matched by the selector, mounts, probes, env.
func checkPod(o object, sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, claims []corev1.PersistentVolumeClaim) {
	checkLabels(o, "pod template labels", tmpl.Labels)
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		fail(o, "selector: %v", err)
	} else if s.Empty() || !s.Matches(labels.Set(tmpl.Labels)) {
		fail(o, "selector %s does not select the pod template's labels %v", s, tmpl.Labels)
	}
	volumes := map[string]bool{}
	for _, v := range tmpl.Spec.Volumes {
		if volumes[v.Name] {
			fail(o, "volume %q twice", v.Name)
		}
		volumes[v.Name] = true
	}
	for _, c := range claims {
		volumes[c.Name] = true
		if _, ok := c.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
			fail(o, "volumeClaimTemplate %q requests no storage", c.Name)
		}
	}
	if len(tmpl.Spec.Containers) == 0 {
		fail(o, "no containers")
	}
	all := append(append([]corev1.Container{}, tmpl.Spec.InitContainers...), tmpl.Spec.Containers...)
	for _, c := range all {
		for _, e := range validation.IsDNS1123Label(c.Name) {
			fail(o, "container name %q: %s", c.Name, e)
		}
		if c.Image == "" {
			fail(o, "container %q has no image", c.Name)
		}
		ports := map[string]bool{}
		for _, p := range c.Ports {
			if p.Name != "" {
				for _, e := range validation.IsValidPortName(p.Name) {
					fail(o, "container %q port name %q: %s", c.Name, p.Name, e)
				}
				ports[p.Name] = true
			}
			for _, e := range validation.IsValidPortNum(int(p.ContainerPort)) {
				fail(o, "container %q port %d: %s", c.Name, p.ContainerPort, e)
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				fail(o, "container %q mounts %q, which is no volume", c.Name, m.Name)
			}
		}
		for _, e := range c.Env {
			for _, msg := range validation.IsEnvVarName(e.Name) {
				fail(o, "container %q env %q: %s", c.Name, e.Name, msg)
			}
		}
		for what, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				continue
			}
			if port := p.HTTPGet.Port; port.StrVal != "" && !ports[port.StrVal] {
				fail(o, "container %q %s uses port %q, which the container does not declare", c.Name, what, port.StrVal)
			}
			if !strings.HasPrefix(p.HTTPGet.Path, "/") {
				fail(o, "container %q %s path %q", c.Name, what, p.HTTPGet.Path)
			}
		}
		if c.SecurityContext == nil || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
			fail(o, "container %q may escalate privileges (securityContext.allowPrivilegeEscalation: false)", c.Name)
		}
	}
	psc := tmpl.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		fail(o, "pods must run as a non-root user (securityContext.runAsNonRoot and a non-zero runAsUser)")
	}
}

func main() {
	name := flag.String("name", "stdin", "what is validated, for the summary line")
	flag.Parse()
	docs, err := split(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "validate: reading:", err)
		os.Exit(1)
	}
	var objs []object
	for i, d := range docs {
		o, err := decode(d)
		if err != nil {
			findings = append(findings, fmt.Sprintf("document %d: %v", i+1, err))
			continue
		}
		objs = append(objs, o)
	}
	podLabels := map[string]labels.Set{} // workload -> pod labels
	headless := map[string]bool{}
	seen := map[string]bool{}
	for _, o := range objs {
		checkMeta(o)
		key := o.kind + "/" + o.name
		if seen[key] {
			fail(o, "defined twice")
		}
		seen[key] = true
		switch x := o.value.(type) {
		case *appsv1.StatefulSet:
			checkPod(o, x.Spec.Selector, &x.Spec.Template, x.Spec.VolumeClaimTemplates)
			podLabels[key] = x.Spec.Template.Labels
		case *appsv1.Deployment:
			checkPod(o, x.Spec.Selector, &x.Spec.Template, nil)
			podLabels[key] = x.Spec.Template.Labels
		case *corev1.Service:
			if x.Spec.ClusterIP == corev1.ClusterIPNone {
				headless[x.Name] = true
			}
			if len(x.Spec.Ports) == 0 {
				fail(o, "no ports")
			}
		}
	}
	selects := func(sel labels.Selector) bool {
		for _, l := range podLabels {
			if sel.Matches(l) {
				return true
			}
		}
		return false
	}
	for _, o := range objs {
		switch x := o.value.(type) {
		case *appsv1.StatefulSet:
			if !headless[x.Spec.ServiceName] {
				fail(o, "serviceName %q is not a headless Service of the stream", x.Spec.ServiceName)
			}
		case *corev1.Service:
			if len(x.Spec.Selector) == 0 || !selects(labels.SelectorFromSet(x.Spec.Selector)) {
				fail(o, "selector %v selects no workload of the stream", x.Spec.Selector)
			}
		case *policyv1.PodDisruptionBudget:
			s, err := metav1.LabelSelectorAsSelector(x.Spec.Selector)
			if err != nil || s.Empty() || !selects(s) {
				fail(o, "selector selects no workload of the stream")
			}
			if (x.Spec.MaxUnavailable == nil) == (x.Spec.MinAvailable == nil) {
				fail(o, "exactly one of maxUnavailable and minAvailable")
			}
		case *networkingv1.NetworkPolicy:
			s, err := metav1.LabelSelectorAsSelector(&x.Spec.PodSelector)
			if err != nil || !selects(s) {
				fail(o, "podSelector selects no workload of the stream")
			}
		case *Certificate:
			if x.Spec.SecretName == "" || x.Spec.IssuerRef.Name == "" || len(x.Spec.DNSNames) == 0 {
				fail(o, "needs secretName, issuerRef.name and dnsNames")
			}
			for _, n := range x.Spec.DNSNames {
				for _, e := range validation.IsWildcardDNS1123Subdomain(n) {
					if strings.HasPrefix(n, "*.") {
						fail(o, "dnsName %q: %s", n, e)
					}
				}
				if !strings.HasPrefix(n, "*.") {
					for _, e := range validation.IsDNS1123Subdomain(n) {
						fail(o, "dnsName %q: %s", n, e)
					}
				}
			}
		}
	}
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.kind]++
	}
	var parts []string
	for k, n := range kinds {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(parts)
	if len(findings) > 0 {
		for _, f := range findings {
			fmt.Fprintln(os.Stderr, "invalid:", f)
		}
		fmt.Fprintf(os.Stderr, "%s: %d objects, %d findings\n", *name, len(objs), len(findings))
		os.Exit(1)
	}
	fmt.Printf("%s: %d objects valid (%s)\n", *name, len(objs), strings.Join(parts, ", "))
}
