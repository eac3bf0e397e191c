// goprobe - a Go program (CGO_ENABLED=0: raw system calls, no libc) for the seccomp tests.
//
//	goprobe get URL OUT          HTTP GET, body to OUT; prints "status=N bytes=M"
//	goprobe serve ADDR DIR       HTTP server on ADDR (host:port) serving DIR; /peer answers the
//	                             client's address as the server sees it; prints READY when listening
//	goprobe udp DEST MSG         connected UDP: send MSG to DEST, print "reply=R local=L"
//	goprobe udpfrom BIND DEST MSG  unconnected UDP bound to BIND: WriteTo/ReadFrom; prints
//	                             "reply=R from=F local=L"
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func die(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "goprobe: "+f+"\n", a...)
	os.Exit(1)
}

func get(url, out string) {
	c := &http.Client{Timeout: 120 * time.Second}
	r, err := c.Get(url)
	if err != nil {
		die("get: %v", err)
	}
	defer r.Body.Close()
	f, err := os.Create(out)
	if err != nil {
		die("create: %v", err)
	}
	n, err := io.Copy(f, r.Body)
	if err != nil {
		die("copy: %v", err)
	}
	f.Close()
	fmt.Printf("status=%d bytes=%d\n", r.StatusCode, n)
}

func serve(addr, dir string) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		die("listen: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/peer", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", r.RemoteAddr, ln.Addr())
	})
	mux.Handle("/", http.FileServer(http.Dir(dir)))
	fmt.Println("READY")
	die("serve: %v", http.Serve(ln, mux))
}

func udp(dest, msg string) {
	c, err := net.Dial("udp", dest)
	if err != nil {
		die("dial: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		die("write: %v", err)
	}
	b := make([]byte, 2048)
	n, err := c.Read(b)
	if err != nil {
		die("read: %v", err)
	}
	fmt.Printf("reply=%s local=%s\n", b[:n], c.LocalAddr())
}

func udpfrom(bind, dest, msg string) {
	la, err := net.ResolveUDPAddr("udp4", bind)
	if err != nil {
		die("resolve: %v", err)
	}
	da, err := net.ResolveUDPAddr("udp4", dest)
	if err != nil {
		die("resolve: %v", err)
	}
	c, err := net.ListenUDP("udp4", la)
	if err != nil {
		die("listen: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.WriteToUDP([]byte(msg), da); err != nil {
		die("writeto: %v", err)
	}
	b := make([]byte, 2048)
	n, from, err := c.ReadFromUDP(b)
	if err != nil {
		die("readfrom: %v", err)
	}
	fmt.Printf("reply=%s from=%s local=%s\n", b[:n], from, c.LocalAddr())
}

func main() {
	if len(os.Args) < 2 {
		die("usage: goprobe get|serve|udp|udpfrom ...")
	}
	a := os.Args[2:]
	switch os.Args[1] {
	case "get":
		get(a[0], a[1])
	case "serve":
		serve(a[0], a[1])
	case "udp":
		udp(a[0], a[1])
	case "udpfrom":
		udpfrom(a[0], a[1], a[2])
	default:
		die("unknown mode %s", os.Args[1])
	}
}
