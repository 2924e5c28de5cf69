package main

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/Masterminds/semver"
	"sigs.k8s.io/yaml"
)

// Maintainer is an entry of Chart.yaml's maintainers (helm's chart.Maintainer).
type Maintainer struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

// Dependency is an entry of Chart.yaml's dependencies; only detected, subcharts are not
// supported.
type Dependency struct {
	Name       string `json:"name"`
	Version    string `json:"version,omitempty"`
	Repository string `json:"repository"`
}

// Metadata is Chart.yaml, with the field names helm's chart.Metadata gives `.Chart`.
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	Home         string            `json:"home,omitempty"`
	Sources      []string          `json:"sources,omitempty"`
	Version      string            `json:"version,omitempty"`
	Description  string            `json:"description,omitempty"`
	Keywords     []string          `json:"keywords,omitempty"`
	Maintainers  []*Maintainer     `json:"maintainers,omitempty"`
	Icon         string            `json:"icon,omitempty"`
	APIVersion   string            `json:"apiVersion,omitempty"`
	Condition    string            `json:"condition,omitempty"`
	Tags         string            `json:"tags,omitempty"`
	AppVersion   string            `json:"appVersion,omitempty"`
	Deprecated   bool              `json:"deprecated,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	KubeVersion  string            `json:"kubeVersion,omitempty"`
	Dependencies []*Dependency     `json:"dependencies,omitempty"`
	Type         string            `json:"type,omitempty"`
}

// Files is `.Files`: the chart's files outside templates/ (helm's engine.files, with the
// accessors templates use most).
type Files map[string][]byte

// GetBytes returns the file's content, or nil.
func (f Files) GetBytes(name string) []byte { return f[name] }

// Get returns the file's content as a string, or "".
func (f Files) Get(name string) string { return string(f[name]) }

// Lines returns the file's lines.
func (f Files) Lines(name string) []string {
	if f[name] == nil {
		return []string{}
	}
	return strings.Split(string(f[name]), "\n")
}

// Template is one file of templates/, named as helm names it: <chart>/templates/<path>.
type Template struct {
	Name string
	Data string
}

// Chart is a chart directory as helm's loader sees it.
type Chart struct {
	Metadata  *Metadata
	Values    map[string]interface{}
	Templates []Template
	Files     Files
}

func loadChart(dir string, warn func(string, ...interface{})) (*Chart, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, err
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("%s: only chart directories are supported, not packaged charts", dir)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "Chart.yaml"))
	if err != nil {
		return nil, fmt.Errorf("%s is not a chart: %w", dir, err)
	}
	meta := &Metadata{}
	if err := yaml.Unmarshal(raw, meta); err != nil {
		return nil, fmt.Errorf("cannot load Chart.yaml: %w", err)
	}
	if err := validateMetadata(meta); err != nil {
		return nil, fmt.Errorf("validation: chart.metadata.%w", err)
	}
	if len(meta.Dependencies) > 0 {
		return nil, fmt.Errorf("chart dependencies are not supported by this renderer")
	}

	helmignore, err := os.ReadFile(filepath.Join(dir, ".helmignore"))
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	rules, err := ignoreRules(helmignore)
	if err != nil {
		return nil, err
	}

	chart := &Chart{Metadata: meta, Values: map[string]interface{}{}, Files: Files{}}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if ignored(rules, rel, d.IsDir()) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			if rel == "charts" {
				if entries, _ := os.ReadDir(p); len(entries) > 0 {
					return fmt.Errorf("subcharts (charts/) are not supported by this renderer")
				}
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		switch {
		case rel == "Chart.yaml":
		case rel == "values.yaml":
			values := map[string]interface{}{}
			if err := yaml.Unmarshal(data, &values); err != nil {
				return fmt.Errorf("cannot load values.yaml: %w", err)
			}
			if values != nil {
				chart.Values = values
			}
		case strings.HasPrefix(rel, "templates/"):
			chart.Templates = append(chart.Templates, Template{Name: path.Join(meta.Name, rel), Data: string(data)})
		case strings.HasPrefix(rel, "crds/"):
			// `helm template` leaves CRDs out unless --include-crds.
		case rel == "values.schema.json":
			warn("%s is not validated by this renderer", rel)
		default:
			chart.Files[rel] = data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(chart.Templates, func(i, j int) bool { return chart.Templates[i].Name < chart.Templates[j].Name })
	return chart, nil
}

// validateMetadata applies helm's chart.Metadata.Validate rules that matter here.
func validateMetadata(m *Metadata) error {
	if m.APIVersion == "" {
		return fmt.Errorf("apiVersion is required")
	}
	if m.APIVersion != "v2" {
		return fmt.Errorf("apiVersion %q is not supported by this renderer (only v2)", m.APIVersion)
	}
	if m.Name == "" {
		return fmt.Errorf("name is required")
	}
	if m.Name != filepath.Base(m.Name) {
		return fmt.Errorf("name %q is invalid", m.Name)
	}
	if m.Version == "" {
		return fmt.Errorf("version is required")
	}
	if _, err := semver.StrictNewVersion(m.Version); err != nil {
		return fmt.Errorf("version %q is invalid", m.Version)
	}
	switch m.Type {
	case "", "application":
	case "library":
		return fmt.Errorf("type: library charts are not installable")
	default:
		return fmt.Errorf("type %q is invalid", m.Type)
	}
	return nil
}

// KubeVersion is `.Capabilities.KubeVersion`.
type KubeVersion struct {
	Version string
	Major   string
	Minor   string
}

// String is the version as given, e.g. v1.33.0.
func (kv *KubeVersion) String() string { return kv.Version }

// GitVersion is helm's deprecated alias of String.
func (kv *KubeVersion) GitVersion() string { return kv.Version }

// VersionSet is `.Capabilities.APIVersions`.
type VersionSet []string

// Has says whether the group/version (or group/version/Kind) is available.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// BuildInfo is `.Capabilities.HelmVersion`.
type BuildInfo struct {
	Version      string `json:"version,omitempty"`
	GitCommit    string `json:"git_commit,omitempty"`
	GitTreeState string `json:"git_tree_state,omitempty"`
	GoVersion    string `json:"go_version,omitempty"`
}

// Capabilities is `.Capabilities`.
type Capabilities struct {
	KubeVersion KubeVersion
	APIVersions VersionSet
	HelmVersion BuildInfo
}

// The built-in group/versions a v1.33 API server serves (helm's default set is generated from
// client-go's scheme; this is the part charts test for).
var defaultAPIVersions = []string{
	"v1",
	"admissionregistration.k8s.io/v1",
	"apiextensions.k8s.io/v1",
	"apiregistration.k8s.io/v1",
	"apps/v1",
	"authentication.k8s.io/v1",
	"authorization.k8s.io/v1",
	"autoscaling/v1",
	"autoscaling/v2",
	"batch/v1",
	"certificates.k8s.io/v1",
	"coordination.k8s.io/v1",
	"discovery.k8s.io/v1",
	"events.k8s.io/v1",
	"flowcontrol.apiserver.k8s.io/v1",
	"networking.k8s.io/v1",
	"node.k8s.io/v1",
	"policy/v1",
	"rbac.authorization.k8s.io/v1",
	"scheduling.k8s.io/v1",
	"storage.k8s.io/v1",
}

func newCapabilities(kubeVersion string, extra []string) (*Capabilities, error) {
	v, err := semver.NewVersion(kubeVersion)
	if err != nil {
		return nil, fmt.Errorf("invalid --kube-version %q: %w", kubeVersion, err)
	}
	apis := append(VersionSet{}, defaultAPIVersions...)
	apis = append(apis, extra...)
	return &Capabilities{
		KubeVersion: KubeVersion{
			Version: "v" + v.String(),
			Major:   fmt.Sprint(v.Major()),
			Minor:   fmt.Sprint(v.Minor()),
		},
		APIVersions: apis,
		// The helm release whose sprig (v3.2.3) matches Debian's; build metadata says what it is.
		HelmVersion: BuildInfo{Version: "v3.16.0+render-chart"},
	}, nil
}

// checkKubeVersion is helm's install-time check of Chart.yaml's kubeVersion.
func checkKubeVersion(m *Metadata, caps *Capabilities) error {
	if m.KubeVersion == "" {
		return nil
	}
	constraint, err := semver.NewConstraint(m.KubeVersion)
	if err != nil {
		return fmt.Errorf("invalid kubeVersion %q in Chart.yaml: %w", m.KubeVersion, err)
	}
	v, err := semver.NewVersion(caps.KubeVersion.Version)
	if err != nil {
		return err
	}
	if !constraint.Check(v) {
		return fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", m.KubeVersion, caps.KubeVersion.Version)
	}
	return nil
}

// userValues reads the -f files in order and merges each over the previous ones, then applies
// the --set-json assignments (helm's values.Options.MergeValues).
func userValues(files, setJSON []string) (map[string]interface{}, error) {
	base := map[string]interface{}{}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			return nil, err
		}
		current := map[string]interface{}{}
		if err := yaml.Unmarshal(raw, &current); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", file, err)
		}
		base = mergeMaps(base, current)
	}
	for _, assignment := range setJSON {
		if err := setJSONValue(base, assignment); err != nil {
			return nil, fmt.Errorf("failed parsing --set-json data %s: %w", assignment, err)
		}
	}
	return base, nil
}

// mergeMaps merges b over a: tables merge key by key, anything else in b replaces.
func mergeMaps(a, b map[string]interface{}) map[string]interface{} {
	out := make(map[string]interface{}, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if bTable, ok := v.(map[string]interface{}); ok {
			if aTable, ok := out[k].(map[string]interface{}); ok {
				out[k] = mergeMaps(aTable, bTable)
				continue
			}
		}
		out[k] = v
	}
	return out
}

// setJSONValue applies one `a.b.c=JSON` assignment: the value replaces whatever is at the
// path, intermediate tables are created. List indexes (a[0]) are not supported.
func setJSONValue(base map[string]interface{}, assignment string) error {
	key, raw, ok := strings.Cut(assignment, "=")
	if !ok || key == "" {
		return fmt.Errorf("expected PATH=JSON")
	}
	if strings.ContainsAny(key, "[]") {
		return fmt.Errorf("list indexes are not supported by this renderer")
	}
	var value interface{}
	if err := json.Unmarshal([]byte(raw), &value); err != nil {
		return err
	}
	parts := strings.Split(key, ".")
	table := base
	for _, part := range parts[:len(parts)-1] {
		next, ok := table[part].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			table[part] = next
		}
		table = next
	}
	table[parts[len(parts)-1]] = value
	return nil
}

// coalesceValues is helm's chartutil.CoalesceValues for a chart without dependencies: the
// user's values win; the chart's defaults fill in what they do not set; a user's null removes
// the default; a table and a non-table never merge (the user's value stays, with a warning).
func coalesceValues(defaults, user map[string]interface{}, warn func(string, ...interface{})) map[string]interface{} {
	out := deepCopy(user).(map[string]interface{})
	coalesceTables(out, deepCopy(defaults).(map[string]interface{}), "", warn)
	return out
}

func coalesceTables(dst, src map[string]interface{}, prefix string, warn func(string, ...interface{})) {
	for key, srcValue := range src {
		fullKey := prefix + key
		dstValue, present := dst[key]
		switch {
		case !present:
			dst[key] = srcValue
		case dstValue == nil:
			delete(dst, key)
		default:
			srcTable, srcIsTable := srcValue.(map[string]interface{})
			dstTable, dstIsTable := dstValue.(map[string]interface{})
			switch {
			case srcIsTable && dstIsTable:
				coalesceTables(dstTable, srcTable, fullKey+".", warn)
			case srcIsTable:
				warn("cannot overwrite table with non table for %s (%v)", fullKey, srcValue)
			case dstIsTable && srcValue != nil:
				warn("destination for %s is a table. Ignoring non-table value (%v)", fullKey, srcValue)
			}
		}
	}
}

func deepCopy(v interface{}) interface{} {
	switch v := v.(type) {
	case map[string]interface{}:
		out := make(map[string]interface{}, len(v))
		for k, x := range v {
			out[k] = deepCopy(x)
		}
		return out
	case []interface{}:
		out := make([]interface{}, len(v))
		for i, x := range v {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return v
	}
}
