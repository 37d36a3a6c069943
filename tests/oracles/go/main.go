// Oracle: would a Go IdP read this raw HTTP/1.1 request as a refresh grant?
//
// Protocol: JSON lines on stdin {"id", "raw": base64}; one line per input on stdout, in order,
// {"id", "refresh", "token", "note"}. The raw bytes go through a socket into a real net/http
// server on 127.0.0.1:0 (its request parser, Host and header checks, chunking, pipelining).
// The handler reads the request as:
//   - fosite (Ory Hydra): POST only, ParseMultipartForm(1<<20), a non-empty PostForm,
//     RemoveEmpty(strings.Split(PostForm.Get("grant_type"), " ")).ExactOne("refresh_token"),
//     and a non-empty PostForm refresh_token ("fosite-contains": any item, not exactly one);
//   - Dex: POST only, ParseForm without error, PostFormValue("grant_type") == "refresh_token";
//   - a generic net/http app: any method, r.FormValue (query merged, errors ignored);
//   - any of these with strings.EqualFold instead of ==.
//
// Refresh if any reading says so.
package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type input struct {
	ID  *int64 `json:"id"`
	Raw string `json:"raw"`
}

type verdict struct {
	ID      *int64  `json:"id"`
	Refresh bool    `json:"refresh"`
	Token   *string `json:"token"`
	Note    string  `json:"note"`
}

// What each connection's requests were read as, keyed by the client's address.
var (
	mu    sync.Mutex
	conns = map[string][]verdict{}
)

// removeEmpty is fosite's RemoveEmpty: TrimSpace each item, drop the empty ones.
func removeEmpty(args []string) (ret []string) {
	for _, v := range args {
		if v = strings.TrimSpace(v); v != "" {
			ret = append(ret, v)
		}
	}
	return
}

// errReader ends a replayed body with the error the first read of it ended with.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// read is the readings of one request: the first that makes it a refresh grant, else why not.
// Each reading parses its own replay of the body, as each IdP parses a fresh request.
func read(r *http.Request) verdict {
	body, bodyErr := io.ReadAll(r.Body)
	if bodyErr == nil {
		bodyErr = io.EOF
	}
	fresh := func() *http.Request {
		c := r.Clone(r.Context())
		c.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{bodyErr}))
		return c
	}
	// fosite: ParseMultipartForm, which hides a ParseForm error behind ErrNotMultipart.
	f := fresh()
	fositeErr := f.ParseMultipartForm(1 << 20)
	if errors.Is(fositeErr, http.ErrNotMultipart) {
		fositeErr = nil
	}
	fositeGrant := removeEmpty(strings.Split(f.PostForm.Get("grant_type"), " "))
	fositeOK := r.Method == "POST" && fositeErr == nil && len(f.PostForm) > 0
	// Dex: ParseForm, then PostFormValue.
	d := fresh()
	dexErr := d.ParseForm()
	// A generic app: FormValue, errors ignored.
	g := fresh()

	readings := []struct {
		name  string
		token string
		ok    func(eq func(a, b string) bool) bool
	}{
		{"fosite", f.PostForm.Get("refresh_token"), func(eq func(a, b string) bool) bool {
			return fositeOK && len(fositeGrant) == 1 && eq(fositeGrant[0], "refresh_token")
		}},
		{"fosite-contains", f.PostForm.Get("refresh_token"), func(eq func(a, b string) bool) bool {
			for _, x := range fositeGrant {
				if eq(x, "refresh_token") {
					return fositeOK
				}
			}
			return false
		}},
		{"dex", d.PostFormValue("refresh_token"), func(eq func(a, b string) bool) bool {
			return r.Method == "POST" && dexErr == nil && eq(d.PostFormValue("grant_type"), "refresh_token")
		}},
		{"form", g.FormValue("refresh_token"), func(eq func(a, b string) bool) bool {
			return eq(g.FormValue("grant_type"), "refresh_token")
		}},
	}
	for _, fold := range []bool{false, true} {
		for _, x := range readings {
			cmp, name := func(a, b string) bool { return a == b }, x.name
			if fold {
				cmp, name = strings.EqualFold, x.name+"-equalfold"
			}
			if x.token != "" && x.ok(cmp) {
				token := x.token
				return verdict{Refresh: true, Token: &token, Note: fmt.Sprintf("%s %s", r.Method, name)}
			}
		}
	}
	note := fmt.Sprintf("%s grant_type=%q", r.Method, g.FormValue("grant_type"))
	if dexErr != nil {
		note += " ParseForm: " + dexErr.Error()
	}
	if fositeErr != nil && fositeErr != dexErr {
		note += " ParseMultipartForm: " + fositeErr.Error()
	}
	return verdict{Note: note}
}

func handler(w http.ResponseWriter, r *http.Request) {
	v := read(r)
	mu.Lock()
	conns[r.RemoteAddr] = append(conns[r.RemoteAddr], v)
	mu.Unlock()
	io.WriteString(w, "ok")
}

// judge sends raw on a fresh connection and collects what the server read from it.
func judge(addr string, raw []byte) verdict {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return verdict{Note: "dial: " + err.Error()}
	}
	defer c.Close()
	key := c.LocalAddr().String()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	c.Write(raw)
	c.(*net.TCPConn).CloseWrite()
	resp, err := io.ReadAll(c)
	mu.Lock()
	got := conns[key]
	delete(conns, key)
	mu.Unlock()
	var notes []string
	for _, v := range got {
		if v.Refresh {
			return v
		}
		notes = append(notes, v.Note)
	}
	if err != nil {
		notes = append(notes, "read: "+err.Error())
	}
	if len(got) == 0 { // refused before any handler: say how
		line := strings.SplitN(string(resp), "\r\n", 2)[0]
		if i := strings.Index(string(resp), "\r\n\r\n"); i >= 0 && len(resp) > i+4 {
			body := string(resp[i+4:])
			if len(body) > 80 {
				body = body[:80]
			}
			line += ": " + body
		}
		notes = append(notes, "refused "+line)
	}
	return verdict{Note: strings.Join(notes, "; ")}
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(handler), ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(ln)
	addr := ln.Addr().String()

	// Up to 16 requests at a time; answers in input order.
	results := make(chan chan verdict, 16)
	done := make(chan struct{})
	go func() {
		out := bufio.NewWriter(os.Stdout)
		enc := json.NewEncoder(out)
		for ch := range results {
			enc.Encode(<-ch)
			out.Flush()
		}
		close(done)
	}()
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	for {
		line, err := in.ReadBytes('\n')
		if len(strings.TrimSpace(string(line))) > 0 {
			ch := make(chan verdict, 1)
			results <- ch
			go func(line []byte) {
				var x input
				if e := json.Unmarshal(line, &x); e != nil {
					ch <- verdict{ID: x.ID, Note: "bad input: " + e.Error()}
					return
				}
				raw, e := base64.StdEncoding.DecodeString(x.Raw)
				if e != nil {
					ch <- verdict{ID: x.ID, Note: "bad base64: " + e.Error()}
					return
				}
				v := judge(addr, raw)
				v.ID = x.ID
				ch <- v
			}(line)
		}
		if err != nil {
			break
		}
	}
	close(results)
	<-done
}
