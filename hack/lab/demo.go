package main

import (
	"context"
	"errors"

	"github.com/cnimedic/cnimedic/e2e/lab"
)

func demo(ctx context.Context, l *lab.Lab) error {
	return errors.New("demo: not written yet")
}
