package main

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Manifest is one document of a rendered template.
type Manifest struct {
	// Name is the template it came from, as in `# Source:`.
	Name    string
	Content string
	Kind    string
	Weight  int
}

// json converts the document as Kubernetes clients read YAML (sigs.k8s.io/yaml), refusing
// duplicate keys, which helm and kubectl would silently collapse.
func (m Manifest) json() (json.RawMessage, error) {
	data, err := yaml.YAMLToJSONStrict([]byte(m.Content))
	if err != nil {
		return nil, fmt.Errorf("YAML parse error on %s: %w", m.Name, err)
	}
	return json.RawMessage(data), nil
}

// simpleHead is what helm reads of each document to sort it (releaseutil.SimpleHead).
type simpleHead struct {
	Version  string `json:"apiVersion"`
	Kind     string `json:"kind,omitempty"`
	Metadata *struct {
		Name        string            `json:"name"`
		Annotations map[string]string `json:"annotations"`
	} `json:"metadata,omitempty"`
}

// helm's document separator (releaseutil.SplitManifests).
var separator = regexp.MustCompile("(?:^|\\s*\n)---\\s*")

// splitManifests is helm v3's releaseutil.SplitManifests: the documents of a file, trimmed,
// the empty ones dropped.
func splitManifests(content string) []string {
	var docs []string
	for _, doc := range separator.Split(strings.TrimSpace(content), -1) {
		if doc == "" {
			continue
		}
		docs = append(docs, strings.TrimSpace(doc))
	}
	return docs
}

// installOrder is helm's releaseutil.InstallOrder.
var installOrder = []string{
	"PriorityClass",
	"Namespace",
	"NetworkPolicy",
	"ResourceQuota",
	"LimitRange",
	"PodSecurityPolicy",
	"PodDisruptionBudget",
	"ServiceAccount",
	"Secret",
	"SecretList",
	"ConfigMap",
	"StorageClass",
	"PersistentVolume",
	"PersistentVolumeClaim",
	"CustomResourceDefinition",
	"ClusterRole",
	"ClusterRoleList",
	"ClusterRoleBinding",
	"ClusterRoleBindingList",
	"Role",
	"RoleList",
	"RoleBinding",
	"RoleBindingList",
	"Service",
	"DaemonSet",
	"Pod",
	"ReplicationController",
	"ReplicaSet",
	"Deployment",
	"HorizontalPodAutoscaler",
	"StatefulSet",
	"Job",
	"CronJob",
	"IngressClass",
	"Ingress",
	"APIService",
	"MutatingWebhookConfiguration",
	"ValidatingWebhookConfiguration",
}

// lessByKind is helm's ordering: known kinds in install order, unknown ones after them by
// kind name; equal kinds keep their order (a stable sort).
func lessByKind(a, b string) bool {
	rank := func(kind string) (int, bool) {
		for i, k := range installOrder {
			if k == kind {
				return i, true
			}
		}
		return 0, false
	}
	ra, aok := rank(a)
	rb, bok := rank(b)
	switch {
	case !aok && !bok:
		return a < b
	case !aok:
		return false
	case !bok:
		return true
	default:
		return ra < rb
	}
}

const (
	hookAnnotation       = "helm.sh/hook"
	hookWeightAnnotation = "helm.sh/hook-weight"
)

// sortManifests is helm's releaseutil.SortManifests: files in name order, NOTES.txt and
// partials left out, every document parsed (a YAML error fails the render), hooks (documents
// with a helm.sh/hook annotation) set apart, and both sorted by kind (hooks by weight first).
func sortManifests(files map[string]string) (manifests, hooks []Manifest, err error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		content := files[name]
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(path.Base(name), "_") {
			continue
		}
		if strings.TrimSpace(content) == "" {
			continue
		}
		for _, doc := range splitManifests(content) {
			var head simpleHead
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				return nil, nil, fmt.Errorf("YAML parse error on %s: %w", name, err)
			}
			m := Manifest{Name: name, Content: doc, Kind: head.Kind}
			if head.Metadata != nil {
				if _, isHook := head.Metadata.Annotations[hookAnnotation]; isHook {
					m.Weight, _ = strconv.Atoi(head.Metadata.Annotations[hookWeightAnnotation])
					hooks = append(hooks, m)
					continue
				}
			}
			manifests = append(manifests, m)
		}
	}
	sort.SliceStable(manifests, func(i, j int) bool { return lessByKind(manifests[i].Kind, manifests[j].Kind) })
	sort.SliceStable(hooks, func(i, j int) bool {
		if hooks[i].Weight != hooks[j].Weight {
			return hooks[i].Weight < hooks[j].Weight
		}
		return lessByKind(hooks[i].Kind, hooks[j].Kind)
	})
	return manifests, hooks, nil
}
