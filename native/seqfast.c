/*
 * seqfast.c -- BufferSequence's reading methods in C (zerg._speedups).
 *
 * Why: a parser over a BufferSequence spends its time in a handful of
 * methods -- seq[i], seq[a:b], find, tobytes, startswith -- and the Python
 * versions cost a frame, a bisect and a few temporary objects per call (the
 * profile of examples/resp.py under redis-benchmark -P 16 showed ~45% of
 * the time there).  Here they read the segments' bytes by pointer: a search
 * in one segment is one memchr/memmem, a copy is one allocation and one
 * memcpy per segment touched.
 *
 * How: the methods belong to SequenceCore, the C base of
 * zerg._buffers.BufferSequence (speedups.c), so __getitem__ and
 * __contains__ are its mp_subscript and sq_contains slots.  The Python class
 * still defines every method: that is the reference.  bind_sequence()
 * (seqfast_bind) replaces each reference in the class's dict by SequenceCore's
 * own descriptor -- for a slot, the slot wrapper, so CPython's slot update
 * puts the C function itself in the subclass's slot, not the generic
 * slot_mp_subscript that looks a method up per call -- and keeps the Python
 * function, which sequence_reference(name) returns (the tests put them back
 * to compare).  Every C method handles the common case; whatever else comes
 * (keyword arguments, a needle that is no simple buffer, a subclass that
 * overrides find, a chain not in the plain shape) goes to the reference
 * before anything happens, so every rare path and every error message is
 * the reference's.  These methods only read, so "before anything happens"
 * costs nothing.
 *
 * Memory: the chain's pointers come from chain_seg (speedups.h), which
 * checks each segment (a live, contiguous memoryview of the length the
 * offsets say) before any byte is read, and no Python code runs between
 * taking a pointer and using it.  A window that starts before the lease's
 * held_from raises the reference's ValueError (seq_check_alive) first.
 *
 * Rules: as speedups.c -- reference counts on every path, errors
 * propagated, the GIL held throughout.
 */
#include "speedups.h"

#include <string.h>

/* ------------------------------------------------------------ the chain */

static inline const char *
search(const char *hay, Py_ssize_t n, const char *needle, Py_ssize_t m)
{
    if (m == 1)
        return memchr(hay, (unsigned char)needle[0], (size_t)n);
    return memmem(hay, (size_t)n, needle, (size_t)m);
}

/* The next run of chain range [*a, b) that lies in one segment: *p and *n
 * (possibly 0 for an empty segment); *a and *k move past it.  Start with
 * chain_locate(c, *a, k).  CHAIN_OK or CHAIN_ODD. */
static inline int
chain_run(const Chain *c, Py_ssize_t *k, Py_ssize_t *a, Py_ssize_t b, const char **p,
          Py_ssize_t *n)
{
    Py_ssize_t s, e;
    if (chain_seg(c, *k, p, &s, &e) != CHAIN_OK || *a < s)
        return CHAIN_ODD;
    Py_ssize_t hi = b < e ? b : e;
    *n = hi > *a ? hi - *a : 0;
    if (*n)
        *p += *a - s;
    *a += *n;
    (*k)++;
    return CHAIN_OK;
}

int
chain_copy(const Chain *c, char *dst, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t k, n;
    const char *p;
    if (a >= b)
        return CHAIN_OK;
    if (chain_locate(c, a, &k) != CHAIN_OK)
        return CHAIN_ODD;
    while (a < b) {
        if (chain_run(c, &k, &a, b, &p, &n) != CHAIN_OK)
            return CHAIN_ODD;
        if (n) {                        /* (an empty segment's pointer may be NULL) */
            memcpy(dst, p, (size_t)n);
            dst += n;
        }
    }
    return CHAIN_OK;
}

int
chain_equal(const Chain *c, Py_ssize_t a, Py_ssize_t b, const char *q, int *eq)
{
    Py_ssize_t k, n;
    const char *p;
    *eq = 1;
    if (a >= b)
        return CHAIN_OK;
    if (chain_locate(c, a, &k) != CHAIN_OK)
        return CHAIN_ODD;
    while (a < b) {
        if (chain_run(c, &k, &a, b, &p, &n) != CHAIN_OK)
            return CHAIN_ODD;
        if (n && memcmp(q, p, (size_t)n) != 0) {
            *eq = 0;
            return CHAIN_OK;
        }
        q += n;
    }
    return CHAIN_OK;
}

/*
 * Each segment's part of [a, b) is searched in place.  A match that starts
 * in segment k and runs on into the next ones starts in [e - m + 1, e) (e:
 * where k ends); when the tail of k holds needle[0] there, the bytes from
 * that candidate to e + m - 1 (< 2m, copied into a small buffer) are
 * searched too.  In-segment matches of k start before any crossing match of
 * k, which start before any match of k + 1, so the first hit is the lowest;
 * a hit in the copied bytes that starts past e is a real match of a later
 * segment and still the lowest (nothing before it matched).
 */
int
chain_find(const Chain *c, const char *needle, Py_ssize_t m, Py_ssize_t a, Py_ssize_t b,
           Py_ssize_t *at)
{
    Py_ssize_t k, s, e;
    const char *p, *hit;
    char small[256];
    *at = -1;
    if (b - a < m)
        return CHAIN_OK;
    if (chain_locate(c, a, &k) != CHAIN_OK)
        return CHAIN_ODD;
    for (;;) {
        if (chain_seg(c, k, &p, &s, &e) != CHAIN_OK || a < s)
            return CHAIN_ODD;
        Py_ssize_t hi = b < e ? b : e;
        if (hi - a >= m && (hit = search(p + (a - s), hi - a, needle, m)) != NULL) {
            *at = s + (hit - p);
            return CHAIN_OK;
        }
        if (e >= b)
            return CHAIN_OK;
        Py_ssize_t lo = e - m + 1 > a ? e - m + 1 : a;
        if (m > 1 && lo < e && lo + m <= b
                && (hit = memchr(p + (lo - s), (unsigned char)needle[0], (size_t)(e - lo)))) {
            Py_ssize_t q = s + (hit - p);
            Py_ssize_t wend = e + m - 1 < b ? e + m - 1 : b;
            char *tmp = small;
            if (wend - q > (Py_ssize_t)sizeof(small)) {
                tmp = PyMem_Malloc((size_t)(wend - q));
                if (tmp == NULL) {
                    PyErr_NoMemory();
                    return CHAIN_ERR;
                }
            }
            int rc = chain_copy(c, tmp, q, wend);
            hit = rc == CHAIN_OK ? search(tmp, wend - q, needle, m) : NULL;
            if (hit != NULL)
                *at = q + (hit - tmp);
            if (tmp != small)
                PyMem_Free(tmp);
            if (rc != CHAIN_OK || hit != NULL)
                return rc;
        }
        if (a < e)
            a = e;
        k++;
    }
}

PyObject *
chain_bytes(const Chain *c, Py_ssize_t a, Py_ssize_t b)
{
    Py_ssize_t k, s, e;
    const char *p;
    if (a >= b)
        return PyBytes_FromStringAndSize(NULL, 0);
    if (chain_locate(c, a, &k) != CHAIN_OK || chain_seg(c, k, &p, &s, &e) != CHAIN_OK
            || a < s)
        return NULL;
    if (b <= e)                                 /* one segment: one memcpy */
        return PyBytes_FromStringAndSize(p + (a - s), b - a);
    /* PyBytes_FromStringAndSize allocates no GC object: the chain holds. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, b - a);
    if (out == NULL)
        return NULL;
    if (chain_copy(c, PyBytes_AS_STRING(out), a, b) != CHAIN_OK) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

PyObject *
seq_slice(SeqObject *seq, Py_ssize_t a, Py_ssize_t b)
{
    if (seq_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_sequence() was not called");
        return NULL;
    }
    /* Strong references first: the allocation below may run the GC. */
    PyObject *segs = Py_XNewRef(seq->segs), *offs = Py_XNewRef(seq->offs);
    PyObject *slots = Py_XNewRef(seq->slots);
    SeqObject *view = seq_alloc();
    if (view == NULL) {
        Py_XDECREF(segs);
        Py_XDECREF(offs);
        Py_XDECREF(slots);
        return NULL;
    }
    view->segs = segs;
    view->offs = offs;
    view->slots = slots;
    view->start = a;
    view->stop = b;
    view->owns = Py_NewRef(Py_False);
    return (PyObject *)view;
}

/* -------------------------------------------------- the reference paths */

enum { R_GETITEM, R_CONTAINS, R_BYTES, R_TOBYTES, R_FIND, R_INDEX, R_STARTSWITH, R_FIRST,
       R_CONTIGUOUS, N_REFS };

/* The names bind_sequence replaces, and the Python functions it kept (for a
 * property, `fn` is its getter). */
static struct { const char *name; PyObject *ref, *fn; } refs[N_REFS] = {
    [R_GETITEM] = {"__getitem__", NULL, NULL},
    [R_CONTAINS] = {"__contains__", NULL, NULL},
    [R_BYTES] = {"__bytes__", NULL, NULL},
    [R_TOBYTES] = {"tobytes", NULL, NULL},
    [R_FIND] = {"find", NULL, NULL},
    [R_INDEX] = {"index", NULL, NULL},
    [R_STARTSWITH] = {"startswith", NULL, NULL},
    [R_FIRST] = {"first", NULL, NULL},
    [R_CONTIGUOUS] = {"contiguous", NULL, NULL},
};

/* The reference of method `which` called on self (args as vectorcall's). */
static PyObject *
call_ref(int which, PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *fn = refs[which].fn;
    if (fn == NULL) {
        PyErr_Format(PyExc_RuntimeError, "BufferSequence.%s: bind_sequence() was not called",
                     refs[which].name);
        return NULL;
    }
    PyObject *fn_ref = Py_NewRef(fn);       /* a rebinding may drop refs[] meanwhile */
    PyObject *r = ref_call_kw(fn_ref, self, args, nargs, kwnames);
    Py_DECREF(fn_ref);
    return r;
}

/* ----------------------------------------------------------- arguments */

/* A byte string argument as pointer and length: 0 (release with
 * arg_release), or 1 when it is not bytes, an int 0..255 or a simple buffer
 * (the reference then decides; no exception set). */
typedef struct {
    const char *p;
    Py_ssize_t n;
    char byte;
    Py_buffer view;
    int has_view;
} Needle;

static int
needle_get(PyObject *obj, Needle *nd, int allow_int)
{
    nd->has_view = 0;
    if (PyBytes_CheckExact(obj)) {
        nd->p = PyBytes_AS_STRING(obj);
        nd->n = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (allow_int && PyLong_Check(obj)) {
        long v = PyLong_AsLong(obj);
        if (v < 0 || v > 255) {
            PyErr_Clear();
            return 1;
        }
        nd->byte = (char)(unsigned char)v;
        nd->p = &nd->byte;
        nd->n = 1;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &nd->view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        return 1;
    }
    nd->has_view = 1;
    nd->p = nd->view.buf;
    nd->n = nd->view.len;
    return 0;
}

static inline void
needle_release(Needle *nd)
{
    if (nd->has_view) {
        PyBuffer_Release(&nd->view);
        nd->has_view = 0;
    }
}

/* start/end of a bytes-like method: None or an int that fits; 1 otherwise. */
static int
index_arg(PyObject *obj, Py_ssize_t *v, int *none)
{
    *none = obj == Py_None;
    if (*none)
        return 0;
    if (!PyLong_Check(obj))
        return 1;
    *v = PyLong_AsSsize_t(obj);
    if (*v == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* self[start:end] in chain coordinates, normalized like bytes.find
 * (zerg._buffers._adjust): 0, or 1 for arguments the reference handles. */
static int
span(const Chain *c, PyObject *const *args, Py_ssize_t nargs, Py_ssize_t *a, Py_ssize_t *b)
{
    Py_ssize_t n = c->stop - c->start, start = 0, end = n;
    int none;
    if (nargs > 1) {
        if (index_arg(args[1], &start, &none))
            return 1;
        if (none)
            start = 0;
        else if (start < 0)
            start = start + n > 0 ? start + n : 0;
    }
    if (nargs > 2) {
        if (index_arg(args[2], &end, &none))
            return 1;
        if (none || end > n)
            end = n;
        else if (end < 0)
            end = end + n > 0 ? end + n : 0;
    }
    /* start may lie past the end, as in _adjust: then the range is empty. */
    *a = start > n ? c->stop + 1 : c->start + start;
    *b = c->start + end;
    return 0;
}

/* ------------------------------------------------------------ the methods */

/* Common entry: the chain of a live sequence.  0, 1 (odd: use the
 * reference), -1 (raised: the window's bytes went back). */
static inline int
enter(PyObject *self, Chain *c)
{
    if (seq_check_alive((SeqObject *)self) < 0)
        return -1;
    return chain_load((SeqObject *)self, c);
}

/* find(sub, start, end) as a chain offset relative to the window, -1 if
 * absent: 0, 1 (use the reference) or -1 (raised). */
static int
find_in(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
        Py_ssize_t *found)
{
    Chain c;
    Needle nd;
    Py_ssize_t a, b, at;
    if (kwnames != NULL || nargs < 1 || nargs > 3)
        return 1;
    int rc = enter(self, &c);
    if (rc != 0)
        return rc;
    if (span(&c, args, nargs, &a, &b) || needle_get(args[0], &nd, 1))
        return 1;
    if (b - a < nd.n) {
        *found = -1;
        rc = 0;
    } else if (nd.n == 0) {
        *found = a - c.start;
        rc = 0;
    } else {
        rc = chain_find(&c, nd.p, nd.n, a, b, &at);
        *found = at < 0 ? -1 : at - c.start;
    }
    needle_release(&nd);
    return rc;
}

static PyObject *
Seq_find(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t found;
    int rc = find_in(self, args, nargs, kwnames, &found);
    if (rc > 0)
        return call_ref(R_FIND, self, args, nargs, kwnames);
    return rc < 0 ? NULL : PyLong_FromSsize_t(found);
}

static PyObject *
Seq_index(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t found;
    /* The reference calls self.find: a subclass's override is honoured. */
    int rc = Py_IS_TYPE(self, seq_type) ? find_in(self, args, nargs, kwnames, &found) : 1;
    if (rc > 0)
        return call_ref(R_INDEX, self, args, nargs, kwnames);
    if (rc < 0)
        return NULL;
    if (found < 0) {
        PyErr_SetString(PyExc_ValueError, "subsection not found");
        return NULL;
    }
    return PyLong_FromSsize_t(found);
}

int
seqfast_contains(PyObject *self, PyObject *sub)
{
    Py_ssize_t found;
    int rc = Py_IS_TYPE(self, seq_type) ? find_in(self, &sub, 1, NULL, &found) : 1;
    if (rc > 0) {
        PyObject *r = call_ref(R_CONTAINS, self, &sub, 1, NULL);
        if (r == NULL)
            return -1;
        rc = PyObject_IsTrue(r);
        Py_DECREF(r);
        return rc;
    }
    return rc < 0 ? -1 : found >= 0;
}

static PyObject *
Seq_tobytes(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    Chain c;
    int rc = enter(self, &c);
    if (rc < 0)
        return NULL;
    if (rc == 0) {
        PyObject *out = chain_bytes(&c, c.start, c.stop);
        if (out != NULL || PyErr_Occurred())
            return out;
    }
    return call_ref(R_TOBYTES, self, NULL, 0, NULL);
}

static PyObject *
Seq_bytes(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!Py_IS_TYPE(self, seq_type))           /* the reference calls self.tobytes() */
        return call_ref(R_BYTES, self, NULL, 0, NULL);
    return Seq_tobytes(self, NULL);
}

static PyObject *
Seq_startswith(PyObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    Chain c;
    Py_ssize_t a, b;
    if (kwnames != NULL || nargs < 1 || nargs > 3)
        return call_ref(R_STARTSWITH, self, args, nargs, kwnames);
    int rc = enter(self, &c);
    if (rc < 0)
        return NULL;
    if (rc > 0 || span(&c, args, nargs, &a, &b))
        return call_ref(R_STARTSWITH, self, args, nargs, kwnames);
    PyObject *prefix = args[0];
    PyObject *const *items = &prefix;
    Py_ssize_t nitems = 1;
    if (PyTuple_Check(prefix)) {
        items = &PyTuple_GET_ITEM(prefix, 0);
        nitems = PyTuple_GET_SIZE(prefix);
    }
    for (Py_ssize_t i = 0; i < nitems; i++) {
        Needle nd;
        int eq = 0;
        if (needle_get(items[i], &nd, 0))
            return call_ref(R_STARTSWITH, self, args, nargs, kwnames);
        rc = b - a >= nd.n ? chain_equal(&c, a, a + nd.n, nd.p, &eq) : CHAIN_OK;
        needle_release(&nd);
        if (rc != CHAIN_OK)
            return call_ref(R_STARTSWITH, self, args, nargs, kwnames);
        if (b - a >= nd.n && eq)
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

PyObject *
seqfast_subscript(PyObject *self, PyObject *key)
{
    Chain c;
    int rc = enter(self, &c);
    if (rc < 0)
        return NULL;
    if (rc > 0)
        return call_ref(R_GETITEM, self, &key, 1, NULL);
    Py_ssize_t n = c.stop - c.start;
    if (PySlice_Check(key)) {
        PyObject *step = ((PySliceObject *)key)->step;
        Py_ssize_t a, b, st;
        if (step != Py_None) {
            if (!PyLong_Check(step))
                return call_ref(R_GETITEM, self, &key, 1, NULL);
            int overflow;
            long v = PyLong_AsLongAndOverflow(step, &overflow);
            if (v == -1 && PyErr_Occurred())
                return NULL;
            if (v != 1 || overflow) {
                PyErr_SetString(PyExc_ValueError, "BufferSequence slicing does not support a step");
                return NULL;
            }
        }
        if (PySlice_Unpack(key, &a, &b, &st) < 0) {
            PyErr_Clear();
            return call_ref(R_GETITEM, self, &key, 1, NULL);
        }
        PySlice_AdjustIndices(n, &a, &b, 1);
        return seq_slice((SeqObject *)self, c.start + a, c.start + (b > a ? b : a));
    }
    if (!PyIndex_Check(key))
        return call_ref(R_GETITEM, self, &key, 1, NULL);    /* its TypeError */
    Py_ssize_t i = PyNumber_AsSsize_t(key, NULL);           /* clamps */
    if (i == -1 && PyErr_Occurred())
        return NULL;
    /* __index__ ran Python code: load the chain again. */
    if (chain_load((SeqObject *)self, &c) != CHAIN_OK)
        return call_ref(R_GETITEM, self, &key, 1, NULL);
    n = c.stop - c.start;
    if (i < 0)
        i += n;
    if (i < 0 || i >= n) {
        PyErr_SetString(PyExc_IndexError, "BufferSequence index out of range");
        return NULL;
    }
    Py_ssize_t pos = c.start + i, k, s, e;
    const char *p;
    if (chain_locate(&c, pos, &k) != CHAIN_OK || chain_seg(&c, k, &p, &s, &e) != CHAIN_OK
            || pos < s || pos >= e)
        return call_ref(R_GETITEM, self, &key, 1, NULL);
    return PyLong_FromLong((unsigned char)p[pos - s]);
}

/* The segment part [lo, hi) (within segment k's [s, e)) as a fresh view. */
static PyObject *
seg_view(const Chain *c, Py_ssize_t k, Py_ssize_t lo, Py_ssize_t hi)
{
    /* A borrowed segment becomes strong before slicing allocates. */
    PyObject *seg = Py_NewRef(PyList_GET_ITEM(c->segs, k));
    PyObject *view = PySequence_GetSlice(seg, lo, hi);
    Py_DECREF(seg);
    return view;
}

static PyObject *
empty_memoryview(void)
{
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL)
        return NULL;
    PyObject *view = PyMemoryView_FromObject(empty);
    Py_DECREF(empty);
    return view;
}

/* The chain and where its first byte lies (segment k, spanning chain offsets
 * [s, e)): 0; 1 when empty (*empty: the empty view, or NULL with an error);
 * 2 when the reference must answer; -1 with an error. */
static int
first_segment(PyObject *self, Chain *c, Py_ssize_t *k, Py_ssize_t *s, Py_ssize_t *e,
              PyObject **empty)
{
    const char *p;
    int rc = enter(self, c);
    if (rc < 0)
        return -1;
    if (rc == 0 && c->start == c->stop) {
        *empty = empty_memoryview();
        return 1;
    }
    if (rc > 0 || chain_locate(c, c->start, k) != CHAIN_OK
            || chain_seg(c, *k, &p, s, e) != CHAIN_OK || c->start < *s)
        return 2;
    return 0;
}

static PyObject *
Seq_first(PyObject *self, void *Py_UNUSED(closure))
{
    Chain c;
    Py_ssize_t k, s, e;
    PyObject *empty = NULL;
    switch (first_segment(self, &c, &k, &s, &e, &empty)) {
    case -1: return NULL;
    case 1: return empty;
    case 2: return call_ref(R_FIRST, self, NULL, 0, NULL);
    }
    return seg_view(&c, k, c.start - s, (c.stop < e ? c.stop : e) - s);
}

static PyObject *
Seq_contiguous(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    Chain c;
    Py_ssize_t k, s, e;
    PyObject *empty = NULL;
    switch (first_segment(self, &c, &k, &s, &e, &empty)) {
    case -1: return NULL;
    case 1: return empty;
    case 2: return call_ref(R_CONTIGUOUS, self, NULL, 0, NULL);
    }
    if (c.stop <= e)
        return seg_view(&c, k, c.start - s, c.stop - s);
    PyObject *copy = chain_bytes(&c, c.start, c.stop);
    if (copy == NULL)
        return PyErr_Occurred() ? NULL : call_ref(R_CONTIGUOUS, self, NULL, 0, NULL);
    PyObject *view = PyMemoryView_FromObject(copy);
    Py_DECREF(copy);
    return view;
}

/* The docstrings say what the Python methods do (autodoc shows these). */
PyMethodDef seqfast_methods[] = {
    {"find", (PyCFunction)(void (*)(void))Seq_find, METH_FASTCALL | METH_KEYWORDS,
     "find($self, sub, start=0, end=None)\n--\n\n"
     "Lowest index of `sub` in self[start:end], or -1; exactly like bytes.find.\n\n"
     "Searches each segment in place (memchr/memmem) and copies fewer than\n"
     "2 * len(sub) bytes around a segment boundary."},
    {"index", (PyCFunction)(void (*)(void))Seq_index, METH_FASTCALL | METH_KEYWORDS,
     "index($self, sub, start=0, end=None)\n--\n\n"
     "Like find() but raises ValueError when `sub` is absent, like bytes.index."},
    {"startswith", (PyCFunction)(void (*)(void))Seq_startswith, METH_FASTCALL | METH_KEYWORDS,
     "startswith($self, prefix, start=0, end=None)\n--\n\n"
     "Like bytes.startswith; compares in place, copies nothing."},
    {"tobytes", (PyCFunction)Seq_tobytes, METH_NOARGS,
     "tobytes($self)\n--\n\nA copy of the bytes (one allocation for the result)."},
    {"__bytes__", (PyCFunction)Seq_bytes, METH_NOARGS,
     "__bytes__($self)\n--\n\nbytes(seq): tobytes()."},
    {"contiguous", (PyCFunction)Seq_contiguous, METH_NOARGS,
     "contiguous($self)\n--\n\n"
     "All the bytes as one read-only memoryview, for code that wants one\n"
     "buffer (``struct.unpack_from``, ``hashlib``, ``int.from_bytes``, a C\n"
     "library): a zero-copy view when they lie in one segment, one copy\n"
     "otherwise.  A view shares the warning of ``first``: do not keep it past\n"
     "``advance()``/``release()``."},
    {NULL, NULL, 0, NULL},
};

PyGetSetDef seqfast_getset[] = {
    {"first", (getter)Seq_first, NULL,
     "The first segment (read-only memoryview); empty if the sequence is empty.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ------------------------------------------------------------- binding */

/*
 * Put SequenceCore's C methods in cls (a SequenceCore subclass) in place of
 * the Python ones, keeping those as the references.  All or nothing; bound
 * again (the same class, or a reloaded one) it keeps what it kept.
 */
int
seqfast_bind(PyTypeObject *cls)
{
    PyObject *kept[N_REFS] = {NULL}, *fns[N_REFS] = {NULL}, *fast[N_REFS] = {NULL};
    int i, set = 0;
    for (i = 0; i < N_REFS; i++) {
        fast[i] = PyDict_GetItemString(SequenceCoreType.tp_dict, refs[i].name);
        PyObject *own = PyDict_GetItemString(cls->tp_dict, refs[i].name);
        if (fast[i] == NULL || own == NULL) {
            PyErr_Format(PyExc_TypeError, "bind_sequence: %s.%s is missing", cls->tp_name,
                         refs[i].name);
            goto fail;
        }
        if (own == fast[i]) {               /* bound already: keep the reference */
            if (refs[i].ref == NULL) {
                PyErr_Format(PyExc_TypeError, "bind_sequence: %s.%s is not Python",
                             cls->tp_name, refs[i].name);
                goto fail;
            }
            kept[i] = Py_NewRef(refs[i].ref);
            fns[i] = Py_NewRef(refs[i].fn);
            continue;
        }
        kept[i] = Py_NewRef(own);
        if (PyFunction_Check(own)) {
            fns[i] = Py_NewRef(own);
        } else if (PyObject_TypeCheck(own, &PyProperty_Type)) {
            fns[i] = PyObject_GetAttrString(own, "fget");
            if (fns[i] == NULL)
                goto fail;
        } else {
            PyErr_Format(PyExc_TypeError, "bind_sequence: %s.%s is not a Python function",
                         cls->tp_name, refs[i].name);
            goto fail;
        }
    }
    for (set = 0; set < N_REFS; set++) {
        if (PyObject_SetAttrString((PyObject *)cls, refs[set].name, fast[set]) < 0)
            goto fail;
    }
    for (i = 0; i < N_REFS; i++) {
        Py_XSETREF(refs[i].ref, kept[i]);
        Py_XSETREF(refs[i].fn, fns[i]);
    }
    return 0;
fail: {
        PyObject *exc = fetch_exception();
        for (i = 0; i < set; i++)           /* put the references back */
            (void)PyObject_SetAttrString((PyObject *)cls, refs[i].name, kept[i]);
        PyErr_Clear();
        for (i = 0; i < N_REFS; i++) {
            Py_XDECREF(kept[i]);
            Py_XDECREF(fns[i]);
        }
        if (exc != NULL)
            restore_exception(exc);
        return -1;
    }
}

/* sequence_reference(name): the Python method (or property) a C one replaced. */
static PyObject *
sp_sequence_reference(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "sequence_reference(name): name must be a str");
        return NULL;
    }
    for (int i = 0; i < N_REFS; i++) {
        if (PyUnicode_CompareWithASCIIString(arg, refs[i].name) == 0 && refs[i].ref != NULL)
            return Py_NewRef(refs[i].ref);
    }
    PyErr_Format(PyExc_KeyError, "BufferSequence.%U", arg);
    return NULL;
}

/* sequence_methods(): the names bind_sequence replaces. */
static PyObject *
sp_sequence_methods(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyTuple_New(N_REFS);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < N_REFS; i++) {
        PyObject *s = PyUnicode_FromString(refs[i].name);
        if (s == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, s);
    }
    return out;
}

static PyMethodDef seqfast_functions[] = {
    {"sequence_reference", (PyCFunction)sp_sequence_reference, METH_O,
     "sequence_reference(name): the Python BufferSequence method the C one replaced."},
    {"sequence_methods", (PyCFunction)sp_sequence_methods, METH_NOARGS,
     "sequence_methods(): the names of the BufferSequence methods carried in C."},
    {NULL, NULL, 0, NULL},
};

int
seqfast_init(PyObject *module)
{
    return PyModule_AddFunctions(module, seqfast_functions);
}
