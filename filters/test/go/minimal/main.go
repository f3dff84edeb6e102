// A Go (wasip1) test filter written without any SDK, only //go:wasmexport and
// //go:wasmimport, proving Go-built modules (2.5 MB, WASI imports, _initialize) load and run.
//   - request: adds `x-go-filter: <plugin_name property>`; `x-test: go-deny` gets a 418
//   - response: adds `x-go-response: yes`
package main

import "unsafe"

//go:wasmimport env proxy_log
func proxyLog(level uint32, ptr unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_property
func proxyGetProperty(path unsafe.Pointer, pathLen uint32, value unsafe.Pointer, valueLen unsafe.Pointer) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen unsafe.Pointer) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, details unsafe.Pointer, detailsLen uint32, body unsafe.Pointer, bodyLen uint32, headers unsafe.Pointer, headersLen uint32, grpc int32) uint32

// Memory handed to the host stays referenced here until the next request frees it, so the
// garbage collector cannot reclaim it while the host writes into it.
var pinned = map[uintptr][]byte{}

//go:wasmexport proxy_abi_version_0_2_0
func abiVersion() {}

//go:wasmexport proxy_on_memory_allocate
func allocate(size uint32) uintptr {
	b := make([]byte, size+1)
	p := uintptr(unsafe.Pointer(&b[0]))
	pinned[p] = b
	return p
}

func take(ptr uintptr, size uint32) string {
	if ptr == 0 {
		return ""
	}
	b := pinned[ptr]
	delete(pinned, ptr)
	return string(b[:size])
}

func log(msg string) {
	b := []byte(msg)
	proxyLog(2, unsafe.Pointer(&b[0]), uint32(len(b)))
}

func property(path string) (string, bool) {
	p := []byte(path)
	var ptr uintptr
	var size uint32
	if proxyGetProperty(unsafe.Pointer(&p[0]), uint32(len(p)), unsafe.Pointer(&ptr), unsafe.Pointer(&size)) != 0 {
		return "", false
	}
	return take(ptr, size), true
}

func header(mapType uint32, name string) (string, bool) {
	k := []byte(name)
	var ptr uintptr
	var size uint32
	if proxyGetHeaderMapValue(mapType, unsafe.Pointer(&k[0]), uint32(len(k)), unsafe.Pointer(&ptr), unsafe.Pointer(&size)) != 0 {
		return "", false
	}
	return take(ptr, size), true
}

func addHeader(mapType uint32, name, value string) {
	k, v := []byte(name), []byte(value+"\x00")
	proxyAddHeaderMapValue(mapType, unsafe.Pointer(&k[0]), uint32(len(k)), unsafe.Pointer(&v[0]), uint32(len(v)-1))
}

//go:wasmexport proxy_on_vm_start
func onVMStart(root, size uint32) uint32 {
	log("go filter: vm start")
	return 1
}

//go:wasmexport proxy_on_context_create
func onContextCreate(ctx, parent uint32) {}

//go:wasmexport proxy_on_request_headers
func onRequestHeaders(ctx, count, eos uint32) uint32 {
	if mode, ok := header(0, "x-test"); ok && mode == "go-deny" {
		body := []byte("go says no\n")
		proxySendLocalResponse(418, nil, 0, unsafe.Pointer(&body[0]), uint32(len(body)), nil, 0, -1)
		return 1
	}
	name, _ := property("plugin_name")
	addHeader(0, "x-go-filter", name)
	return 0
}

//go:wasmexport proxy_on_response_headers
func onResponseHeaders(ctx, count, eos uint32) uint32 {
	addHeader(2, "x-go-response", "yes")
	return 0
}

//go:wasmexport proxy_on_done
func onDone(ctx uint32) uint32 { return 1 }

//go:wasmexport proxy_on_delete
func onDelete(ctx uint32) {}

func main() {}
