# C types for chunk.py, used when setup.py compiles it with Cython (an "augmenting" .pxd:
# chunk.py itself stays plain Python and runs unchanged where it is not compiled).
# Values are held in 64-bit ints: lengths and ids are at most 24 and 32 bits wide.
import cython

ctypedef long long i64


cdef class _InStream:
    cdef public i64 timestamp, field, length, type_id, stream_id
    cdef public bint extended
    cdef public object buf


cdef class ChunkReader:
    cdef public Py_ssize_t chunk_size, max_message, max_streams, max_pending
    cdef bytearray _data
    cdef Py_ssize_t _pos, _pending
    cdef dict _streams

    cpdef list feed(self, data)

    @cython.locals(data=bytearray, pos=Py_ssize_t, avail=Py_ssize_t, fmt=int, csid=i64,
                   need=Py_ssize_t, hsize=Py_ssize_t, st=_InStream, continuing=bint,
                   field=i64, length=i64, type_id=i64, stream_id=i64, extended=bint,
                   have=Py_ssize_t, size=Py_ssize_t, end=Py_ssize_t)
    cdef bint _chunk(self, list out) except -1

    @cython.locals(data=bytearray, size=Py_ssize_t, count=Py_ssize_t, end=Py_ssize_t,
                   header=int, k=Py_ssize_t)
    cdef Py_ssize_t _whole(self, i64 csid, Py_ssize_t pos, i64 length) except -1

    @cython.locals(size=Py_ssize_t, step=Py_ssize_t, count=Py_ssize_t, at=Py_ssize_t)
    cdef bytes _join(self, Py_ssize_t pos, i64 length)

    cdef _InStream _stream(self, i64 csid, int fmt)

    @cython.locals(data=bytearray, value=i64)
    cdef tuple _extended(self, Py_ssize_t pos, i64 field, int fmt, bint continuing)

    cdef _check_length(self, i64 csid, i64 length)

    cdef _take(self, _InStream st, i64 csid, bytearray data, Py_ssize_t pos, Py_ssize_t size,
               list out)

    cdef _emit(self, _InStream st, i64 csid, object payload, list out)
