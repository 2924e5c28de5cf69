// Command render-chart renders a Helm chart directory the way `helm template` does, without
// helm: Go's text/template with the sprig v3 function library and helm's own functions
// (include, tpl, required, toYaml, toToml, ...), helm's values coalescing, and helm's output
// (documents split, empty ones dropped, sorted by kind, each headed by `# Source:`).
//
// It covers what a self-contained application chart needs. Not supported: subcharts and
// dependencies, packaged (.tgz) charts, values.schema.json validation, --set
// (only --set-json, without list indexes), the .Files accessors other than Get, GetBytes and
// Lines, lookup against a cluster (it finds nothing, as in `helm template`). The --output json
// form converts each document with sigs.k8s.io/yaml like Kubernetes clients, but refuses
// duplicate keys. Built from Debian's Go packages only, in GOPATH mode: see
// scripts/render-chart.sh.
//
//	render-chart [flags] [NAME] CHART
//
//	-f, --values FILE          values file, merged over the chart's values.yaml (repeatable)
//	--set-json PATH=JSON       set a value from JSON, e.g. config={"step_timeout":"15m"} (repeatable)
//	-n, --namespace NS         .Release.Namespace (default "default")
//	--kube-version V           .Capabilities.KubeVersion (default v1.33.0)
//	-a, --api-versions GV      extra .Capabilities.APIVersions entries (repeatable)
//	-o, --output yaml|json     helm template's YAML stream, or one JSON array of the documents
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
)

// The Kubernetes version the repository's Rust code is built against (k8s-openapi v1_33).
const defaultKubeVersion = "v1.33.0"

// helm's release name rule (pkg/chartutil: DNS-1123 subdomain, at most 53 characters).
var releaseNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

const maxReleaseNameLen = 53

type options struct {
	releaseName string
	chartDir    string
	namespace   string
	valueFiles  []string
	setJSON     []string
	kubeVersion string
	apiVersions []string
	output      string
}

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func parseArgs(args []string, stderr io.Writer) (*options, error) {
	o := &options{releaseName: "release-name", namespace: "default", kubeVersion: defaultKubeVersion, output: "yaml"}
	fs := flag.NewFlagSet("render-chart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Var((*repeated)(&o.valueFiles), "values", "values `FILE` merged over the chart's values.yaml (repeatable)")
	fs.Var((*repeated)(&o.valueFiles), "f", "shorthand for --values")
	fs.Var((*repeated)(&o.setJSON), "set-json", "`PATH=JSON` value, e.g. config={\"step_timeout\":\"15m\"} (repeatable)")
	fs.StringVar(&o.namespace, "namespace", o.namespace, ".Release.Namespace")
	fs.StringVar(&o.namespace, "n", o.namespace, "shorthand for --namespace")
	fs.StringVar(&o.kubeVersion, "kube-version", o.kubeVersion, ".Capabilities.KubeVersion")
	fs.Var((*repeated)(&o.apiVersions), "api-versions", "extra .Capabilities.APIVersions entry (repeatable)")
	fs.Var((*repeated)(&o.apiVersions), "a", "shorthand for --api-versions")
	fs.StringVar(&o.output, "output", o.output, "yaml (helm template's stream) or json (one JSON array of the documents)")
	fs.StringVar(&o.output, "o", o.output, "shorthand for --output")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: render-chart [flags] [NAME] CHART")
		fs.PrintDefaults()
	}
	// Flags may come before, between or after the positional arguments, as with helm.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(positional) {
	case 1:
		o.chartDir = positional[0]
	case 2:
		o.releaseName, o.chartDir = positional[0], positional[1]
	default:
		fs.Usage()
		return nil, fmt.Errorf("expected [NAME] CHART, got %d arguments", len(positional))
	}
	if o.output != "yaml" && o.output != "json" {
		return nil, fmt.Errorf("--output must be yaml or json, not %q", o.output)
	}
	if len(o.releaseName) > maxReleaseNameLen || !releaseNamePattern.MatchString(o.releaseName) {
		return nil, fmt.Errorf("invalid release name %q: must be a DNS-1123 subdomain of at most %d characters", o.releaseName, maxReleaseNameLen)
	}
	return o, nil
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	o, err := parseArgs(args, stderr)
	if err != nil {
		return err
	}
	warn := func(format string, a ...interface{}) { fmt.Fprintf(stderr, "warning: "+format+"\n", a...) }

	chart, err := loadChart(o.chartDir, warn)
	if err != nil {
		return err
	}
	caps, err := newCapabilities(o.kubeVersion, o.apiVersions)
	if err != nil {
		return err
	}
	if err := checkKubeVersion(chart.Metadata, caps); err != nil {
		return err
	}
	user, err := userValues(o.valueFiles, o.setJSON)
	if err != nil {
		return err
	}
	values := coalesceValues(chart.Values, user, warn)

	release := map[string]interface{}{
		"Name":      o.releaseName,
		"Namespace": o.namespace,
		"Revision":  1,
		"IsUpgrade": false,
		"IsInstall": true,
		"Service":   "Helm",
	}
	top := map[string]interface{}{
		"Chart":        chart.Metadata,
		"Capabilities": caps,
		"Release":      release,
		"Values":       values,
		"Files":        chart.Files,
		"Subcharts":    map[string]interface{}{},
	}
	rendered, err := renderTemplates(chart, top)
	if err != nil {
		return err
	}
	manifests, hooks, err := sortManifests(rendered)
	if err != nil {
		return err
	}
	all := append(manifests, hooks...)

	var out bytes.Buffer
	if o.output == "json" {
		docs := make([]json.RawMessage, 0, len(all))
		for _, m := range all {
			doc, err := m.json()
			if err != nil {
				return err
			}
			docs = append(docs, doc)
		}
		encoded, err := json.MarshalIndent(docs, "", "  ")
		if err != nil {
			return err
		}
		out.Write(encoded)
		out.WriteByte('\n')
	} else {
		for _, m := range all {
			fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.Name, m.Content)
		}
	}
	_, err = stdout.Write(out.Bytes())
	return err
}
