// Command kstatus prints what the kstatus library (sigs.k8s.io/cli-utils, the one Flux, kpt and
// cli-utils' `kapply` wait on) computes for Kubernetes objects.
//
// Input on stdin: one object, or a List (`kubectl get -o json`). Output: one JSON object per item,
// {"namespace": "...", "name": "...", "status": "Current|InProgress|Failed|...", "message": "..."}.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func run() error {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	var object unstructured.Unstructured
	if err := object.UnmarshalJSON(input); err != nil {
		return fmt.Errorf("reading the object: %w", err)
	}
	items := []unstructured.Unstructured{object}
	if object.IsList() {
		list, err := object.ToList()
		if err != nil {
			return err
		}
		items = list.Items
	}
	out := json.NewEncoder(os.Stdout)
	for i := range items {
		item := &items[i]
		computed, err := status.Compute(item)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", item.GetNamespace(), item.GetName(), err)
		}
		r := result{item.GetNamespace(), item.GetName(), computed.Status.String(), computed.Message}
		if err := out.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(1)
	}
}
