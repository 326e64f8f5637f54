package controllers

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestControllerErrorsSayWhere enforces, over every non-test .go file under controllers/, that a controller error
// says what was being done and to which object, and that no result asks for the deprecated Requeue:
//
//   - In a function (or function literal) whose last result is of type error, a return statement's last result may
//     not be a bare identifier other than nil (`return reconcile.Result{}, err`, `return live`): without type
//     information every identifier in that position is an error returned as it came. Allowed are nil, a call that
//     wraps it (fmt.Errorf("...: %w", ..., err), errors.Join, a helper of our own that wraps), and a value built on
//     the spot.
//   - client.IgnoreNotFound(...) and client.IgnoreAlreadyExists(...) may not be that last result either: they pass
//     the API server's error through with no word of ours. Wrap it: `if err := ...; client.IgnoreNotFound(err) != nil
//     { return ..., fmt.Errorf("...: %w", err) }`.
//   - A named error result may not be assigned a bare identifier either (`retErr = err`), since a naked return then
//     returns it as it came.
//   - fmt.Errorf given an error (an identifier named err or ending in Err) must wrap it with %w, so callers still see
//     its class (apierrors.IsNotFound, IsConflict, ... use errors.As).
//   - No reconcile.Result (or ctrl.Result) literal sets Requeue (deprecated in controller-runtime v0.25): use
//     RequeueAfter.
func TestControllerErrorsSayWhere(t *testing.T) {
	fset := token.NewFileSet()
	var problems []string
	report := func(pos token.Pos, format string, args ...any) {
		p := fset.Position(pos)
		problems = append(problems, p.Filename+":"+strconv.Itoa(p.Line)+": "+fmt.Sprintf(format, args...))
	}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		checkFile(f, report)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) > 0 {
		t.Errorf("%d controller error(s) that do not say where, or deprecated Requeue:\n%s\n"+
			"wrap it: fmt.Errorf(\"<what was being done> <to which object>: %%w\", err)",
			len(problems), strings.Join(problems, "\n"))
	}
}

// checkFile reports every violation in one file.
func checkFile(f *ast.File, report func(token.Pos, string, ...any)) {
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncDecl:
			if n.Body != nil {
				checkFunc(n.Type, n.Body, report)
			}
		case *ast.FuncLit:
			checkFunc(n.Type, n.Body, report)
		case *ast.CompositeLit:
			if isResultType(n.Type) {
				for _, el := range n.Elts {
					if kv, ok := el.(*ast.KeyValueExpr); ok {
						if k, ok := kv.Key.(*ast.Ident); ok && k.Name == "Requeue" {
							report(kv.Pos(), "Result{Requeue: ...} is deprecated: use RequeueAfter")
						}
					}
				}
			}
		case *ast.CallExpr:
			checkErrorf(n, report)
		}
		return true
	})
}

// checkFunc checks the return statements and named-result assignments of one function, not those of the function
// literals inside it (ast.Inspect in checkFile visits those on their own).
func checkFunc(typ *ast.FuncType, body *ast.BlockStmt, report func(token.Pos, string, ...any)) {
	if typ.Results == nil || len(typ.Results.List) == 0 {
		return
	}
	last := typ.Results.List[len(typ.Results.List)-1]
	if id, ok := last.Type.(*ast.Ident); !ok || id.Name != "error" {
		return
	}
	named := map[string]bool{}
	for _, n := range last.Names {
		named[n.Name] = true
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			if len(n.Results) > 0 {
				checkReturned(n.Results[len(n.Results)-1], report)
			}
		case *ast.AssignStmt:
			for i, lhs := range n.Lhs {
				if id, ok := lhs.(*ast.Ident); ok && named[id.Name] && len(n.Rhs) == len(n.Lhs) {
					checkReturned(n.Rhs[i], report)
				}
			}
		}
		return true
	})
}

// checkReturned reports an error value returned as it came.
func checkReturned(e ast.Expr, report func(token.Pos, string, ...any)) {
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		if e.Name != "nil" {
			report(e.Pos(), "returns %s unwrapped: say what was being done and to which object", e.Name)
		}
	case *ast.CallExpr:
		if sel, ok := e.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "IgnoreNotFound" || sel.Sel.Name == "IgnoreAlreadyExists") {
			report(e.Pos(), "returns %s(...) unwrapped: say what was being done and to which object", sel.Sel.Name)
		}
	}
}

// checkErrorf reports fmt.Errorf given an error but no %w.
func checkErrorf(call *ast.CallExpr, report func(token.Pos, string, ...any)) {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Errorf" || len(call.Args) < 2 {
		return
	}
	if pkg, ok := sel.X.(*ast.Ident); !ok || pkg.Name != "fmt" {
		return
	}
	lit, ok := call.Args[0].(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING || strings.Contains(lit.Value, "%w") {
		return
	}
	for _, a := range call.Args[1:] {
		if id, ok := ast.Unparen(a).(*ast.Ident); ok && (id.Name == "err" || strings.HasSuffix(id.Name, "Err")) {
			report(call.Pos(), "fmt.Errorf formats %s without %%w: its class (apierrors.IsNotFound, ...) is lost", id.Name)
		}
	}
}

// isResultType says whether a composite literal's type is reconcile.Result or ctrl.Result.
func isResultType(e ast.Expr) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != "Result" {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && (pkg.Name == "reconcile" || pkg.Name == "ctrl")
}

// TestControllerErrorsSayWhereCatches keeps the check itself honest: each kind of violation is found, and the
// allowed forms are not.
func TestControllerErrorsSayWhereCatches(t *testing.T) {
	const src = `package p

func bare() (reconcile.Result, error) {
	if err := get(); err != nil {
		return reconcile.Result{}, err // bad
	}
	return reconcile.Result{Requeue: true}, nil // bad
}

func ignored() error {
	return client.IgnoreNotFound(get()) // bad
}

func named() (res ctrl.Result, retErr error) {
	retErr = err // bad
	f := func() error { return live } // bad
	_ = fmt.Errorf("getting %s: %v", name, err) // bad
	return
}

func fine() (reconcile.Result, error) {
	if err := get(); client.IgnoreNotFound(err) != nil {
		return reconcile.Result{}, fmt.Errorf("getting node %s: %w", name, err)
	}
	if err := get(); err != nil {
		return reconcile.Result{}, errors.Join(err, other)
	}
	f := func() int { return n }
	return reconcile.Result{RequeueAfter: time.Second}, nil
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	checkFile(f, func(pos token.Pos, _ string, _ ...any) { got = append(got, fset.Position(pos).Line) })
	want := []int{5, 7, 11, 15, 16, 17}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("violations on lines %v, want %v", got, want)
	}
}
