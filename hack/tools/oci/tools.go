//go:build tools

// Package tools pins the OCI tools this module builds: crane assembles the operator's image
// without Docker, and the CNCF distribution registry serves images and charts on loopback.
package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
	_ "github.com/google/go-containerregistry/cmd/crane"
)
