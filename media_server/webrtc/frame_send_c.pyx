# cython: language_level=3, boundscheck=False, wraparound=False
"""frame_send.FrameSender compiled: one call per frame and viewer, no Python per packet
but the bytes kept for the NACK history.

Same bytes on the wire and in the history as the plain-Python twin (frame_send.py; tests/
media_server/test_frame_send.py compares them). SRTP: libsrtp's srtp_protect, called
through the function pointer pylibsrtp's cffi binding exposes, on the srtp_t of the
pylibsrtp Session passed in (kept referenced here, so it outlives every call). libsrtp
sessions are not thread-safe: like pylibsrtp's own protect(), this is called only on the
event loop's thread, and it keeps the GIL throughout, so nothing else runs meanwhile.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, EINVAL, EIO, errno
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uintptr_t
from libc.stdlib cimport realloc
from libc.string cimport memcpy, memset
from posix.uio cimport iovec

import logging
import socket

log = logging.getLogger("media_server.webrtc.frame_send")


cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *)
    unsigned char *CMSG_DATA(cmsghdr *)
    size_t CMSG_SPACE(size_t)
    size_t CMSG_LEN(size_t)
    ssize_t c_sendmsg "sendmsg"(int, const msghdr *, int)
    ssize_t c_sendto "sendto"(int, const void *, size_t, int, const sockaddr *, socklen_t)
    int AF_INET, AF_INET6

cdef extern from "<netinet/in.h>":
    struct in_addr:
        uint32_t s_addr
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        uint16_t sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        uint16_t sin6_port
        in6_addr sin6_addr
    uint16_t htons(uint16_t)

cdef extern from "<arpa/inet.h>":
    int inet_pton(int, const char *, void *)

cdef extern from "<errno.h>":
    int ENOPROTOOPT, EOPNOTSUPP, EWOULDBLOCK

ctypedef int (*srtp_protect_t)(void *ctx, void *rtp, int *length)
SRTP_PROTECT = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"  # cffi's spelling

cdef enum:
    SOL_UDP_ = 17  # linux/socket.h
    UDP_SEGMENT_ = 103  # linux/udp.h
    GSO_MAX_SEGMENTS = 64
    GSO_MAX_BYTES = 65000
    SLOT = 1500  # pylibsrtp's buffer: a packet plus SRTP's trailer (at most 144 bytes)
    MAX_TRAILER = 144
    HISTORY = 128  # aiortc.rtp.RTP_HISTORY_SIZE

# one frame's packets, protected in place; grown on demand, used by one call at a time
cdef uint8_t *_slots = NULL
cdef int *_sizes = NULL
cdef Py_ssize_t _capacity = 0


cdef int _reserve(Py_ssize_t count) except -1:
    global _slots, _sizes, _capacity
    if count <= _capacity:
        return 0
    slots = <uint8_t *>realloc(_slots, count * SLOT)
    if slots == NULL:
        raise MemoryError()
    _slots = slots
    sizes = <int *>realloc(_sizes, count * sizeof(int))
    if sizes == NULL:
        raise MemoryError()
    _sizes = sizes
    _capacity = count
    return 0


cdef class FrameSender:
    cdef srtp_protect_t _protect
    cdef void *_ctx
    cdef object _session
    cdef object _sock
    cdef int _fd
    cdef sockaddr_storage _addr
    cdef socklen_t _addrlen
    cdef public bint gso
    cdef public Py_ssize_t batches

    def __init__(self, session, sock, addr, bint gso):
        from pylibsrtp import Session
        from pylibsrtp._binding import ffi, lib

        if type(session) is not Session:
            raise TypeError("not a pylibsrtp Session")
        # the libsrtp 2 call this file declares (libsrtp 3 takes separate in/out buffers)
        if ffi.typeof(lib.srtp_protect).cname != SRTP_PROTECT:
            raise TypeError(f"pylibsrtp's srtp_protect is {ffi.typeof(lib.srtp_protect).cname}")
        try:
            ctx = session._srtp[0]  # pylibsrtp 1.0's srtp_t, freed with the Session
        except (AttributeError, TypeError) as exc:
            raise TypeError(f"pylibsrtp's Session changed: {exc}") from None
        self._protect = <srtp_protect_t><uintptr_t>int(
            ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))
        )
        self._ctx = <void *><uintptr_t>int(ffi.cast("uintptr_t", ctx))
        self._session = session
        self._sock = sock  # keeps the fd open
        self._fd = sock.fileno()
        self._set_addr(addr[0], addr[1])
        self.gso = gso
        self.batches = 0

    cdef _set_addr(self, str host, int port):
        cdef sockaddr_in *v4 = <sockaddr_in *>&self._addr
        cdef sockaddr_in6 *v6 = <sockaddr_in6 *>&self._addr
        raw = host.encode()
        memset(&self._addr, 0, sizeof(sockaddr_storage))
        if inet_pton(AF_INET, raw, &v4.sin_addr) == 1:
            v4.sin_family = AF_INET
            v4.sin_port = htons(port)
            self._addrlen = sizeof(sockaddr_in)
        elif inet_pton(AF_INET6, raw, &v6.sin6_addr) == 1:
            v6.sin6_family = AF_INET6
            v6.sin6_port = htons(port)
            self._addrlen = sizeof(sockaddr_in6)
        else:
            raise ValueError(f"not an IP address this path can send to: {host!r}")

    def send_frame(
        self,
        int first,
        int payload_type,
        Py_ssize_t seq,
        unsigned long long timestamp,
        unsigned long long ssrc,
        bytes extension,
        payloads,
        dict history,
    ):
        """Send one frame; (bytes on the wire, packets left because the socket buffer was
        full: the caller queues them)."""
        cdef Py_ssize_t count = len(payloads)
        cdef Py_ssize_t i, size, ext_len = len(extension), total = 0
        cdef Py_buffer view
        cdef uint8_t *p
        cdef int rc
        cdef list plain = []
        # first every Python object (the history's bytes), then C only: the shared slots
        # are filled, protected and sent with no Python code (a GC finalizer) in between
        for i in range(count):
            PyObject_GetBuffer(payloads[i], &view, PyBUF_SIMPLE)
            try:
                size = 12 + ext_len + view.len
                if size > SLOT - MAX_TRAILER:
                    raise ValueError("packet is too long")
                data = PyBytes_FromStringAndSize(NULL, size)
                p = <uint8_t *>PyBytes_AS_STRING(data)
                p[0] = first
                p[1] = payload_type | (0x80 if i == count - 1 else 0)
                p[2] = (seq >> 8) & 0xFF
                p[3] = seq & 0xFF
                _put32(p + 4, timestamp)
                _put32(p + 8, ssrc)
                memcpy(p + 12, PyBytes_AS_STRING(extension), ext_len)
                memcpy(p + 12 + ext_len, view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
            history[seq % HISTORY] = (seq, data)
            plain.append(data)
            seq = (seq + 1) & 0xFFFF
        _reserve(count)
        for i in range(count):
            data = plain[i]
            _sizes[i] = len(<bytes>data)
            memcpy(_slots + i * SLOT, PyBytes_AS_STRING(data), _sizes[i])
            rc = self._protect(self._ctx, _slots + i * SLOT, &_sizes[i])
            if rc != 0:
                raise RuntimeError(f"srtp_protect failed with status {rc}")
            total += _sizes[i]
        cdef Py_ssize_t start = 0, end, sent
        while start < count:
            end = _run_end(start, count)
            sent = self._send_run(start, end)
            if sent < end - start:
                return total, [
                    PyBytes_FromStringAndSize(<char *>(_slots + j * SLOT), _sizes[j])
                    for j in range(start + sent, count)
                ]
            start = end
        return total, []

    cdef Py_ssize_t _send_run(self, Py_ssize_t start, Py_ssize_t end) except -1:
        """How many of the run's packets left (or were lost) before the buffer filled."""
        cdef iovec iov[GSO_MAX_SEGMENTS]
        cdef char control[64]
        cdef msghdr msg
        cdef cmsghdr *cmsg
        cdef Py_ssize_t i
        cdef int err
        self.batches += 1
        if end - start > 1 and self.gso:
            for i in range(start, end):
                iov[i - start].iov_base = _slots + i * SLOT
                iov[i - start].iov_len = _sizes[i]
            memset(&msg, 0, sizeof(msg))
            memset(control, 0, sizeof(control))
            msg.msg_name = &self._addr
            msg.msg_namelen = self._addrlen
            msg.msg_iov = iov
            msg.msg_iovlen = end - start
            msg.msg_control = control
            msg.msg_controllen = CMSG_SPACE(sizeof(uint16_t))
            cmsg = CMSG_FIRSTHDR(&msg)
            cmsg.cmsg_level = SOL_UDP_
            cmsg.cmsg_type = UDP_SEGMENT_
            cmsg.cmsg_len = CMSG_LEN(sizeof(uint16_t))
            (<uint16_t *>CMSG_DATA(cmsg))[0] = <uint16_t>_sizes[start]
            while c_sendmsg(self._fd, &msg, 0) < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN or err == EWOULDBLOCK:
                    return 0
                if err not in (EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP):
                    return end - start  # e.g. ICMP unreachable reported late: the session ends
                log.info("UDP GSO refused on this path (errno %d): sending packet by packet", err)
                self.gso = False
                break
            else:
                return end - start
        for i in range(start, end):
            while c_sendto(
                self._fd, _slots + i * SLOT, _sizes[i], 0, <sockaddr *>&self._addr, self._addrlen
            ) < 0:
                err = errno
                if err == EINTR:
                    continue
                if err == EAGAIN or err == EWOULDBLOCK:
                    return i - start
                break  # as above
        return end - start


cdef inline void _put32(uint8_t *p, unsigned long long v):
    p[0] = (v >> 24) & 0xFF
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF


cdef Py_ssize_t _run_end(Py_ssize_t start, Py_ssize_t count):
    """frame_send.gso_runs, one run at a time."""
    cdef int size = _sizes[start]
    cdef Py_ssize_t end = start + 1, total = size
    while (
        end < count
        and end - start < GSO_MAX_SEGMENTS
        and total + _sizes[end] <= GSO_MAX_BYTES
        and _sizes[end] <= size
    ):
        total += _sizes[end]
        end += 1
        if _sizes[end - 1] < size:
            break
    return end
