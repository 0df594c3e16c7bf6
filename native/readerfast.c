/*
 * readerfast.c -- zerg.SequenceReader in C (zerg._speedups.SequenceReader).
 *
 * Why: a parser's inner loop is the reader's try_* methods, a few per token.
 * In Python each is a frame plus one or two calls into the sequence (find,
 * a slice, tobytes), each with its own checks and temporaries.  Here a
 * read works on the sequence's chain directly (speedups.h): a search that
 * stays in one segment is one memchr/memmem, try_read_bytes_to builds its
 * bytes from the segments with no slice in between, try_read_int decodes
 * up to 8 bytes without any object but the int.
 *
 * What: the same class as zerg._seqreader.SequenceReader (the reference,
 * which stays importable as PySequenceReader): the same attributes,
 * methods, results, errors and messages, and the same memory of a failed
 * try_read_to (the delimiter, where that search started and how far it
 * looked) so a repeated search resumes instead of starting over.
 * zerg.SequenceReader is this type when the extension is loaded (the
 * multidict/yarl convention); tests/test_readerfast.py drives both with the
 * same random operations.  One difference a subclass can see: the reference
 * calls the sequence's own methods (find, __getitem__, startswith), so a
 * BufferSequence subclass that overrides them is honoured there; this type
 * reads the chain, so it is not.
 *
 * Rules: as speedups.c -- reference counts on every path, errors
 * propagated, the GIL held throughout.  The chain's pointers are used only
 * while no Python code runs (see speedups.h).
 */
#include "speedups.h"

#include <string.h>

typedef struct {
    PyObject_HEAD
    PyObject *seq;              /* the BufferSequence read; NULL before __init__ */
    Py_ssize_t pos;             /* consumed */
    Py_ssize_t examined;        /* the furthest offset looked at */
    PyObject *miss;             /* bytes: delimiter of the last failed search, or NULL */
    Py_ssize_t miss_from;       /* ... the position it searched from */
    Py_ssize_t miss_upto;       /* ... and len(seq) then */
} ReaderObject;

static PyTypeObject ReaderType;

/* ------------------------------------------------------------- helpers */

static int
no_sequence(void)
{
    PyErr_SetString(PyExc_ValueError, "SequenceReader.__init__() was not called");
    return -1;
}

/* len(seq): 0 or -1. */
static inline int
seq_len(ReaderObject *self, Py_ssize_t *n)
{
    Py_ssize_t a, b;
    if (self->seq == NULL)
        return no_sequence();
    if (seq_bounds((SeqObject *)self->seq, &a, &b) < 0)
        return -1;
    *n = b - a;
    return 0;
}

static inline void
look(ReaderObject *self, Py_ssize_t upto)
{
    if (upto > self->examined)
        self->examined = upto;
}

/* The chain of the live sequence: 0, or -1 with an exception (its bytes
 * went back: the reference's ValueError; or a chain not in plain shape). */
/* A chain helper's answer as 0 or -1 with an exception (speedups.h). */
int
chain_ok(int rc)
{
    if (rc == CHAIN_ODD)
        PyErr_SetString(PyExc_ValueError, "SequenceReader: the sequence's chain is not plain "
                                          "(a segment was released or replaced)");
    return rc == CHAIN_OK ? 0 : -1;
}

static int
live_chain(ReaderObject *self, Chain *c)
{
    if (self->seq == NULL)
        return no_sequence();
    if (seq_check_alive((SeqObject *)self->seq) < 0)
        return -1;
    return chain_ok(chain_load((SeqObject *)self->seq, c));
}

/* A bytes-like argument, as `x if type(x) is bytes else memoryview(x).tobytes()`
 * (with memoryview's TypeError for anything else), without the copy when
 * it is a simple buffer. */
typedef struct {
    const char *p;
    Py_ssize_t n;
    PyObject *bytes;            /* a bytes object holding p, or NULL */
    Py_buffer view;
    int has_view;
} Arg;

static int
arg_get(PyObject *obj, Arg *arg)
{
    arg->bytes = NULL;
    arg->has_view = 0;
    if (PyBytes_CheckExact(obj)) {
        arg->p = PyBytes_AS_STRING(obj);
        arg->n = PyBytes_GET_SIZE(obj);
        return 0;
    }
    if (PyObject_CheckBuffer(obj) && PyObject_GetBuffer(obj, &arg->view, PyBUF_SIMPLE) == 0) {
        arg->has_view = 1;
        arg->p = arg->view.buf;
        arg->n = arg->view.len;
        return 0;
    }
    PyErr_Clear();
    PyObject *mv = PyMemoryView_FromObject(obj);
    if (mv == NULL)
        return -1;
    arg->bytes = PyBytes_FromObject(mv);         /* mv.tobytes() */
    Py_DECREF(mv);
    if (arg->bytes == NULL)
        return -1;
    arg->p = PyBytes_AS_STRING(arg->bytes);
    arg->n = PyBytes_GET_SIZE(arg->bytes);
    return 0;
}

static void
arg_release(Arg *arg)
{
    if (arg->has_view)
        PyBuffer_Release(&arg->view);
    arg->has_view = 0;
    Py_CLEAR(arg->bytes);
}

/* The argument as a bytes object (a new reference). */
static PyObject *
arg_bytes(PyObject *obj, Arg *arg)
{
    if (PyBytes_CheckExact(obj))
        return Py_NewRef(obj);
    if (arg->bytes != NULL)
        return Py_NewRef(arg->bytes);
    return PyBytes_FromStringAndSize(arg->p, arg->n);
}

/* An int argument as a C integer, clamped to Py_ssize_t (messages show the
 * object itself). */
static int
int_arg(PyObject *obj, Py_ssize_t *v)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(obj)->tp_name);
        return -1;
    }
    *v = PyNumber_AsSsize_t(obj, NULL);
    return (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

/*
 * Vectorcall arguments by name: out[0..npos) positional or keyword,
 * out[npos..ntotal) keyword-only; the first nrequired must be given.  out[]
 * holds NULL for what was not given.  0, or -1 with a TypeError.
 */
static Py_NO_INLINE int
parse_named(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
            const char *const *names, int npos, int ntotal, int nrequired, PyObject **out)
{
    int i;
    for (i = 0; i < ntotal; i++)
        out[i] = NULL;
    if (nargs > npos) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d positional argument%s (%zd given)",
                     fname, npos, npos == 1 ? "" : "s", nargs);
        return -1;
    }
    for (i = 0; i < nargs; i++)
        out[i] = args[i];
    if (kwnames != NULL) {
        for (Py_ssize_t j = 0; j < PyTuple_GET_SIZE(kwnames); j++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, j);
            for (i = 0; i < ntotal; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                    break;
            }
            if (i == ntotal) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + j];
        }
    }
    for (i = 0; i < nrequired; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* parse() for the common call, positional arguments only, without a call
 * (parse_named for the rest and for every error). */
static inline int
parse(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
      const char *const *names, int npos, int ntotal, int nrequired, PyObject **out)
{
    if (kwnames != NULL || nargs < nrequired || nargs > npos)
        return parse_named(fname, args, nargs, kwnames, names, npos, ntotal, nrequired, out);
    int i;
    for (i = 0; i < nargs; i++)
        out[i] = args[i];
    for (; i < ntotal; i++)
        out[i] = NULL;
    return 0;
}

/* ------------------------------------------------------ the type itself */

static int
init_with(ReaderObject *self, PyObject *seq)
{
    if (seq_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_sequence() was not called");
        return -1;
    }
    if (!PyObject_TypeCheck(seq, seq_type)) {
        PyObject *name = PyType_GetName(Py_TYPE(seq));
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError, "SequenceReader reads a BufferSequence, not %U", name);
            Py_DECREF(name);
        }
        return -1;
    }
    Py_XSETREF(self->seq, Py_NewRef(seq));
    self->pos = 0;
    self->examined = 0;
    Py_CLEAR(self->miss);
    return 0;
}

static int
Reader_init(ReaderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"seq", NULL};
    PyObject *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:SequenceReader", kwlist, &seq))
        return -1;
    return init_with(self, seq);
}

/* SequenceReader(seq) without the argument tuple (a reader per message). */
static PyObject *
Reader_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if ((PyTypeObject *)type != &ReaderType || nargs != 1 || kwnames != NULL) {
        /* a subclass or keywords: the ordinary type call */
        PyObject *tuple = PyTuple_New(nargs), *kw = NULL;
        if (tuple == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        if (kwnames != NULL) {
            kw = PyDict_New();
            for (Py_ssize_t j = 0; kw != NULL && j < PyTuple_GET_SIZE(kwnames); j++) {
                if (PyDict_SetItem(kw, PyTuple_GET_ITEM(kwnames, j), args[nargs + j]) < 0)
                    Py_CLEAR(kw);
            }
            if (kw == NULL) {
                Py_DECREF(tuple);
                return NULL;
            }
        }
        PyObject *r = PyType_Type.tp_call(type, tuple, kw);
        Py_DECREF(tuple);
        Py_XDECREF(kw);
        return r;
    }
    ReaderObject *self = (ReaderObject *)ReaderType.tp_alloc(&ReaderType, 0);
    if (self == NULL)
        return NULL;
    if (init_with(self, args[0]) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
Reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->seq);
    Py_VISIT(self->miss);
    /* Not Py_TYPE(self): a heap subclass's subtype_traverse visits it. */
    return 0;
}

static int
Reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->seq);
    Py_CLEAR(self->miss);
    return 0;
}

static void
Reader_dealloc(ReaderObject *self)
{
    /* A heap subclass's instances come through subtype_dealloc, which drops
     * the reference to their type after this returns. */
    PyObject_GC_UnTrack(self);
    Reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
Reader_repr(ReaderObject *self)
{
    Py_ssize_t n;
    if (seq_len(self, &n) < 0)
        return NULL;
    return PyUnicode_FromFormat("<SequenceReader consumed=%zd remaining=%zd>", self->pos,
                                n - self->pos);
}

/* ------------------------------------------------------------ position */

static PyObject *
Reader_get_sequence(ReaderObject *self, void *Py_UNUSED(closure))
{
    if (self->seq == NULL) {
        no_sequence();
        return NULL;
    }
    return Py_NewRef(self->seq);
}

static PyObject *
Reader_get_consumed(ReaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->pos);
}

static PyObject *
Reader_get_remaining(ReaderObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n;
    return seq_len(self, &n) < 0 ? NULL : PyLong_FromSsize_t(n - self->pos);
}

static PyObject *
Reader_get_end(ReaderObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n;
    if (seq_len(self, &n) < 0)
        return NULL;
    return PyBool_FromLong(self->pos >= n);
}

static PyObject *
Reader_get_examined(ReaderObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->examined > self->pos ? self->examined : self->pos);
}

static PyObject *
Reader_get_unread(ReaderObject *self, void *Py_UNUSED(closure))
{
    Chain c;
    if (live_chain(self, &c) < 0)
        return NULL;
    Py_ssize_t n = c.stop - c.start, a = self->pos < n ? self->pos : n;
    return seq_slice((SeqObject *)self->seq, c.start + a, c.stop);
}

static const char *const n_names[] = {"n"};

static PyObject *
Reader_advance(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *arg[1];
    Py_ssize_t n, len;
    if (parse("advance", args, nargs, kwnames, n_names, 1, 1, 1, arg) < 0
            || int_arg(arg[0], &n) < 0 || seq_len(self, &len) < 0)
        return NULL;
    if (n < 0 || n > len - self->pos) {
        PyErr_Format(PyExc_ValueError, "advance(%S) outside 0..%zd", arg[0], len - self->pos);
        return NULL;
    }
    self->pos += n;
    Py_RETURN_NONE;
}

static PyObject *
Reader_rewind(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *arg[1];
    Py_ssize_t n;
    if (parse("rewind", args, nargs, kwnames, n_names, 1, 1, 1, arg) < 0
            || int_arg(arg[0], &n) < 0)
        return NULL;
    if (n < 0 || n > self->pos) {
        PyErr_Format(PyExc_ValueError, "rewind(%S) outside 0..%zd", arg[0], self->pos);
        return NULL;
    }
    self->pos -= n;
    Py_RETURN_NONE;
}

/* --------------------------------------------------------------- reads */

static PyObject *
Reader_is_next(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"prefix", "advance"};
    PyObject *arg[2];
    Arg want;
    Chain c;
    Py_ssize_t len;
    int eq = 0;
    if (parse("is_next", args, nargs, kwnames, names, 2, 2, 1, arg) < 0)
        return NULL;
    if (arg_get(arg[0], &want) < 0)
        return NULL;
    Py_ssize_t m = want.n;
    if (seq_len(self, &len) < 0)
        goto fail;
    look(self, self->pos + m < len ? self->pos + m : len);
    /* seq.startswith(want, pos) */
    if (live_chain(self, &c) < 0)
        goto fail;
    Py_ssize_t a = c.start + self->pos;
    if (self->pos <= len && c.stop - a >= m
            && chain_ok(chain_equal(&c, a, a + m, want.p, &eq)) < 0)
        goto fail;
    arg_release(&want);
    if (!eq || self->pos > len || c.stop - a < m)
        Py_RETURN_FALSE;
    if (arg[1] != NULL) {
        int adv = PyObject_IsTrue(arg[1]);
        if (adv < 0)
            return NULL;
        if (adv)
            self->pos += m;
    }
    Py_RETURN_TRUE;
fail:
    arg_release(&want);
    return NULL;
}

/* The search of try_read_to: 0 with *at (the delimiter's offset in the
 * sequence, or -1 after recording the miss), or -1 with an exception. */
static int
read_to(ReaderObject *self, PyObject *delimiter, Arg *delim, Chain *c, Py_ssize_t *at)
{
    if (arg_get(delimiter, delim) < 0)
        return -1;
    Py_ssize_t m = delim->n, pos = self->pos, start = pos, len, found;
    if (m == 0) {
        PyErr_SetString(PyExc_ValueError, "empty delimiter");
        return -1;
    }
    PyObject *miss = self->miss;
    if (miss != NULL && PyBytes_GET_SIZE(miss) == m && self->miss_from <= pos
            && memcmp(PyBytes_AS_STRING(miss), delim->p, (size_t)m) == 0) {
        /* [miss_from, miss_upto) held no delimiter: resume where that search stopped. */
        Py_ssize_t resume = self->miss_upto - m + 1;
        start = resume > pos ? resume : pos;
    }
    if (live_chain(self, c) < 0)
        return -1;
    len = c->stop - c->start;
    found = -1;
    if (start <= len && chain_ok(chain_find(c, delim->p, m, c->start + start, c->stop,
                                            &found)) < 0)
        return -1;
    if (found < 0) {
        PyObject *keep = arg_bytes(delimiter, delim);
        if (keep == NULL)
            return -1;
        Py_XSETREF(self->miss, keep);
        self->miss_from = pos;
        self->miss_upto = len;
        look(self, len);
        *at = -1;
        return 0;
    }
    Py_CLEAR(self->miss);
    *at = found - c->start;
    look(self, *at + m);
    return 0;
}

static const char *const to_names[] = {"delimiter", "advance_past"};

/* try_read_to and try_read_bytes_to: a slice or a bytes copy. */
static PyObject *
reader_read_to(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
               const char *fname, int copy)
{
    PyObject *arg[2], *piece;
    Arg delim;
    Chain c;
    Py_ssize_t at;
    if (parse(fname, args, nargs, kwnames, to_names, 2, 2, 1, arg) < 0)
        return NULL;
    int rc = read_to(self, arg[0], &delim, &c, &at);
    if (rc < 0) {
        arg_release(&delim);
        return NULL;
    }
    Py_ssize_t m = delim.n;
    arg_release(&delim);
    if (at < 0)
        Py_RETURN_NONE;
    Py_ssize_t a = c.start + self->pos, b = c.start + at;
    if (copy) {
        piece = chain_bytes(&c, a, b);
        if (piece == NULL) {
            if (!PyErr_Occurred())
                (void)chain_ok(CHAIN_ODD);
            return NULL;
        }
    } else {
        piece = seq_slice((SeqObject *)self->seq, a, b);
        if (piece == NULL)
            return NULL;
    }
    int past = arg[1] == NULL ? 1 : PyObject_IsTrue(arg[1]);
    if (past < 0) {
        Py_DECREF(piece);
        return NULL;
    }
    self->pos = past ? at + m : at;
    return piece;
}

static PyObject *
Reader_try_read_to(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    return reader_read_to(self, args, nargs, kwnames, "try_read_to", 0);
}

static PyObject *
Reader_try_read_bytes_to(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                         PyObject *kwnames)
{
    return reader_read_to(self, args, nargs, kwnames, "try_read_bytes_to", 1);
}

/* The n bytes at the position, the reader past them: 0 with a zero-copy
 * slice (copy 0) or bytes (copy 1) in *out; 1 when fewer than n remain (the
 * reader examined to the end, its position unchanged); -1 with an
 * exception. */
static int
take(ReaderObject *self, Py_ssize_t n, int copy, PyObject **out)
{
    Py_ssize_t len;
    Chain c;
    if (seq_len(self, &len) < 0)
        return -1;
    if (len - self->pos < n) {
        look(self, len);
        return 1;
    }
    if (live_chain(self, &c) < 0)
        return -1;
    Py_ssize_t a = c.start + self->pos;
    PyObject *piece;
    if (copy) {
        piece = chain_bytes(&c, a, a + n);
        if (piece == NULL && !PyErr_Occurred())
            (void)chain_ok(CHAIN_ODD);
    } else {
        piece = seq_slice((SeqObject *)self->seq, a, a + n);
    }
    if (piece == NULL)
        return -1;
    self->pos += n;
    *out = piece;
    return 0;
}

/* try_read_exact and try_read_bytes. */
static PyObject *
reader_read_exact(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames, const char *fname, int copy)
{
    PyObject *arg[1], *piece;
    Py_ssize_t n;
    if (parse(fname, args, nargs, kwnames, n_names, 1, 1, 1, arg) < 0
            || int_arg(arg[0], &n) < 0)
        return NULL;
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "try_read_exact(%S): n must be >= 0", arg[0]);
        return NULL;
    }
    int rc = take(self, n, copy, &piece);
    if (rc > 0)
        Py_RETURN_NONE;
    return rc < 0 ? NULL : piece;
}

static PyObject *
Reader_try_read_exact(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    return reader_read_exact(self, args, nargs, kwnames, "try_read_exact", 0);
}

static PyObject *
Reader_try_read_bytes(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames)
{
    return reader_read_exact(self, args, nargs, kwnames, "try_read_bytes", 1);
}

static PyObject *
Reader_try_read_int(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                    PyObject *kwnames)
{
    static const char *const names[] = {"length", "byteorder", "signed"};
    PyObject *arg[3], *value;
    Py_ssize_t length, len;
    Chain c;
    if (parse("try_read_int", args, nargs, kwnames, names, 2, 3, 1, arg) < 0
            || int_arg(arg[0], &length) < 0)
        return NULL;
    if (length <= 0) {
        PyErr_Format(PyExc_ValueError, "try_read_int(%S): length must be > 0", arg[0]);
        return NULL;
    }
    if (seq_len(self, &len) < 0)
        return NULL;
    if (len - self->pos < length) {
        look(self, len);
        Py_RETURN_NONE;
    }
    if (live_chain(self, &c) < 0)
        return NULL;
    /* int.from_bytes(raw, byteorder, signed=signed), its errors included */
    int little = 0, is_signed = 0;
    if (arg[1] != NULL) {
        if (!PyUnicode_Check(arg[1])) {
            PyErr_Format(PyExc_TypeError, "from_bytes() argument 'byteorder' must be str, not %.50s",
                         Py_TYPE(arg[1])->tp_name);
            return NULL;
        }
        if (PyUnicode_CompareWithASCIIString(arg[1], "little") == 0) {
            little = 1;
        } else if (PyUnicode_CompareWithASCIIString(arg[1], "big") != 0) {
            PyErr_SetString(PyExc_ValueError, "byteorder must be either 'little' or 'big'");
            return NULL;
        }
    }
    if (arg[2] != NULL && (is_signed = PyObject_IsTrue(arg[2])) < 0)
        return NULL;
    /* The chain again: the calls above may have run Python code. */
    if (live_chain(self, &c) < 0)
        return NULL;
    Py_ssize_t a = c.start + self->pos;
    if (length <= 8) {
        unsigned char raw[8];
        unsigned long long v = 0;
        if (chain_ok(chain_copy(&c, (char *)raw, a, a + length)) < 0)
            return NULL;
        for (Py_ssize_t i = 0; i < length; i++)
            v = (v << 8) | raw[little ? length - 1 - i : i];
        if (is_signed && (v >> (8 * length - 1)) & 1) {
            unsigned long long mask = length == 8 ? ~0ULL : (1ULL << (8 * length)) - 1;
            value = PyLong_FromLongLong(-(long long)(~v & mask) - 1);
        } else {
            value = PyLong_FromUnsignedLongLong(v);
        }
    } else {
        PyObject *raw = chain_bytes(&c, a, a + length);
        if (raw == NULL) {
            if (!PyErr_Occurred())
                (void)chain_ok(CHAIN_ODD);
            return NULL;
        }
        value = _PyLong_FromByteArray((const unsigned char *)PyBytes_AS_STRING(raw),
                                      (size_t)length, little, is_signed);
        Py_DECREF(raw);
    }
    if (value != NULL)
        self->pos += length;
    return value;
}

#define FRAME_MAX 16            /* longest prefix or delimiter of try_read_decimal */

/* The reference's _not_decimal message. */
static void
not_decimal(const char *w, Py_ssize_t n, PyObject *prefix, PyObject *delimiter)
{
    PyObject *got = PyBytes_FromStringAndSize(w, n);
    if (got == NULL)
        return;
    PyErr_Format(PyExc_ValueError, "try_read_decimal: expected %R, digits and %R, got %R",
                 prefix, delimiter, got);
    Py_DECREF(got);
}

static PyObject *
Reader_try_read_decimal(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                        PyObject *kwnames)
{
    static const char *const names[] = {"prefix", "delimiter", "signed", "limit"};
    PyObject *arg[4], *pre_obj = NULL, *delim_obj = NULL, *result = NULL;
    Arg pre, delim;             /* (what arg_release reads, before arg_get fills them) */
    pre.bytes = delim.bytes = NULL;
    pre.has_view = delim.has_view = 0;
    unsigned long long limit = 9223372036854775807ULL, value = 0;
    int is_signed = 0;
    char w[FRAME_MAX + 20 + FRAME_MAX];
    Chain c;
    Py_ssize_t len;
    if (parse("try_read_decimal", args, nargs, kwnames, names, 2, 4, 0, arg) < 0)
        return NULL;
    /* The arguments as the reference sees them: bytes (for messages) and a view. */
    static PyObject *empty, *crlf;
    if (empty == NULL && (empty = PyBytes_FromStringAndSize("", 0)) == NULL)
        return NULL;
    if (crlf == NULL && (crlf = PyBytes_FromStringAndSize("\r\n", 2)) == NULL)
        return NULL;
    if (arg_get(arg[0] != NULL ? arg[0] : empty, &pre) < 0
            || arg_get(arg[1] != NULL ? arg[1] : crlf, &delim) < 0)
        goto done;
    if (delim.n == 0) {
        PyErr_SetString(PyExc_ValueError, "empty delimiter");
        goto done;
    }
    if (pre.n > FRAME_MAX || delim.n > FRAME_MAX) {
        PyErr_Format(PyExc_ValueError, "try_read_decimal: prefix and delimiter are at most "
                                       "%d bytes", FRAME_MAX);
        goto done;
    }
    if (arg[2] != NULL && (is_signed = PyObject_IsTrue(arg[2])) < 0)
        goto done;
    if (arg[3] != NULL) {
        if (!PyLong_Check(arg[3])) {
            PyErr_Format(PyExc_TypeError, "try_read_decimal: limit must be an int, not %.100s",
                         Py_TYPE(arg[3])->tp_name);
            goto done;
        }
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(arg[3], &overflow);
        if (v == -1 && !overflow && PyErr_Occurred())
            goto done;
        if (overflow < 0 || (!overflow && v < 0)) {
            PyErr_Format(PyExc_ValueError, "try_read_decimal: limit must be >= 0, not %S",
                         arg[3]);
            goto done;
        }
        limit = (unsigned long long)v;
        if (overflow) {         /* >= 2**63; above 2**64 - 1 every 19 digits pass */
            limit = PyLong_AsUnsignedLongLong(arg[3]);
            if (limit == ~0ULL && PyErr_Occurred()) {
                if (!PyErr_ExceptionMatches(PyExc_OverflowError))
                    goto done;
                PyErr_Clear();
            }
        }
    }
    /* The window: the next len(prefix) + 20 + len(delimiter) bytes, or fewer. */
    if (seq_len(self, &len) < 0 || live_chain(self, &c) < 0)
        goto done;
    Py_ssize_t pos = self->pos, n = pre.n + 20 + delim.n;
    if (n > len - pos)
        n = len - pos > 0 ? len - pos : 0;
    /* Read in place when the window lies in one segment (the common case),
     * else from a copy; win is used only until Python code can run. */
    const char *win = w;
    if (n > 0 && chain_span(&c, c.start + pos, c.start + pos + n, &win) != CHAIN_OK) {
        win = w;
        if (chain_ok(chain_copy(&c, w, c.start + pos, c.start + pos + n)) < 0)
            goto done;
    }
    look(self, pos + n);
    Py_ssize_t i = pre.n < n ? pre.n : n;
    if (memcmp(win, pre.p, (size_t)i) != 0)
        goto bad;
    if (n < pre.n)
        goto wait;
    Py_ssize_t start = i + (is_signed && i < n && win[i] == '-');
    for (i = start; i < n && i - start < 19 && win[i] >= '0' && win[i] <= '9'; i++)
        value = value * 10 + (unsigned long long)(win[i] - '0');
    if (i == n)
        goto wait;
    Py_ssize_t tail = n - i < delim.n ? n - i : delim.n;
    if (i == start || memcmp(win + i, delim.p, (size_t)tail) != 0)
        goto bad;
    if (tail < delim.n)
        goto wait;
    int negative = start > pre.n;
    if (value > limit) {
        PyObject *lim = arg[3] != NULL ? Py_NewRef(arg[3])
                                       : PyLong_FromUnsignedLongLong(limit);
        if (lim != NULL) {
            PyErr_Format(PyExc_ValueError, "try_read_decimal: %s%llu is beyond the limit %S",
                         negative ? "-" : "", value, lim);
            Py_DECREF(lim);
        }
        goto done;
    }
    /* 19 digits fit an unsigned 64-bit value; its negation may not fit a signed one. */
    if (!negative) {
        result = PyLong_FromUnsignedLongLong(value);
    } else if (value <= (unsigned long long)LLONG_MAX) {
        result = PyLong_FromLongLong(-(long long)value);
    } else {
        PyObject *v = PyLong_FromUnsignedLongLong(value);
        result = v != NULL ? PyNumber_Negative(v) : NULL;
        Py_XDECREF(v);
    }
    if (result != NULL)
        self->pos = pos + i + delim.n;
    goto done;
bad:
    if (win != w)               /* (the message is made from our own copy) */
        memcpy(w, win, (size_t)n);
    pre_obj = arg_bytes(arg[0] != NULL ? arg[0] : empty, &pre);
    delim_obj = arg_bytes(arg[1] != NULL ? arg[1] : crlf, &delim);
    if (pre_obj != NULL && delim_obj != NULL)
        not_decimal(w, n, pre_obj, delim_obj);
    goto done;
wait:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(pre_obj);
    Py_XDECREF(delim_obj);
    arg_release(&pre);
    arg_release(&delim);
    return result;
}

static PyObject *
Reader_try_read_byte(ReaderObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t len, k, s, e;
    const char *p;
    Chain c;
    if (seq_len(self, &len) < 0)
        return NULL;
    if (self->pos >= len)
        Py_RETURN_NONE;
    if (live_chain(self, &c) < 0)
        return NULL;
    Py_ssize_t at = c.start + self->pos;
    if (chain_ok(chain_locate(&c, at, &k)) < 0 || chain_ok(chain_seg(&c, k, &p, &s, &e)) < 0)
        return NULL;
    if (at < s || at >= e) {
        (void)chain_ok(CHAIN_ODD);
        return NULL;
    }
    self->pos++;
    return PyLong_FromLong((unsigned char)p[at - s]);
}

static PyObject *
Reader_skip(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"byte_values"};
    PyObject *arg[1];
    unsigned char in[256] = {0};
    Py_ssize_t len, k, s, e, skipped = 0;
    const char *p;
    Chain c;
    if (parse("skip", args, nargs, kwnames, names, 1, 1, 1, arg) < 0)
        return NULL;
    if (PyLong_Check(arg[0])) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(arg[0], &overflow);
        if (v == -1 && PyErr_Occurred())
            return NULL;
        if (overflow || v < 0 || v > 255) {
            PyErr_SetString(PyExc_ValueError, "bytes must be in range(0, 256)");
            return NULL;
        }
        in[v] = 1;
    } else {
        Arg values;
        if (arg_get(arg[0], &values) < 0)
            return NULL;
        Py_ssize_t n = values.n;
        for (Py_ssize_t i = 0; i < n; i++)
            in[(unsigned char)values.p[i]] = 1;
        arg_release(&values);
        if (n == 0)
            return PyLong_FromLong(0);
    }
    if (live_chain(self, &c) < 0)
        return NULL;
    len = c.stop - c.start;
    Py_ssize_t a = c.start + (self->pos < len ? self->pos : len);
    if (a < c.stop) {
        if (chain_ok(chain_locate(&c, a, &k)) < 0)
            return NULL;
        for (;; k++) {
            if (chain_ok(chain_seg(&c, k, &p, &s, &e)) < 0)
                return NULL;
            if (a < s) {
                (void)chain_ok(CHAIN_ODD);
                return NULL;
            }
            Py_ssize_t hi = c.stop < e ? c.stop : e, i = a;
            while (i < hi && in[(unsigned char)p[i - s]])
                i++;
            skipped += i - a;
            if (i < hi || hi >= c.stop)
                break;
            a = hi > a ? hi : a;
        }
    }
    self->pos += skipped;
    look(self, self->pos + 1 < len ? self->pos + 1 : len);
    return PyLong_FromSsize_t(skipped);
}

/* --------------------------------------------------------------- tables */

static PyGetSetDef Reader_getset[] = {
    {"sequence", (getter)Reader_get_sequence, NULL, "The sequence being read.", NULL},
    {"consumed", (getter)Reader_get_consumed, NULL, "Bytes read (the position).", NULL},
    {"remaining", (getter)Reader_get_remaining, NULL, "Bytes after the position.", NULL},
    {"end", (getter)Reader_get_end, NULL, "True when nothing remains.", NULL},
    {"examined", (getter)Reader_get_examined, NULL,
     "The furthest offset any operation looked at (>= ``consumed``).", NULL},
    {"unread", (getter)Reader_get_unread, NULL,
     "The bytes after the position (a zero-copy slice).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)
#define FN(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef Reader_methods[] = {
    {"advance", FN(Reader_advance), FASTKW,
     "advance($self, n)\n--\n\nMove forward ``n`` bytes (0 <= n <= remaining)."},
    {"rewind", FN(Reader_rewind), FASTKW,
     "rewind($self, n)\n--\n\nMove back ``n`` bytes (0 <= n <= consumed)."},
    {"is_next", FN(Reader_is_next), FASTKW,
     "is_next($self, prefix, advance=False)\n--\n\n"
     "True if the unread bytes start with ``prefix``; with ``advance``, move\n"
     "past it.  False also when fewer bytes than ``prefix`` have arrived and\n"
     "they match so far (check ``remaining`` to tell)."},
    {"try_read_to", FN(Reader_try_read_to), FASTKW,
     "try_read_to($self, delimiter, advance_past=True)\n--\n\n"
     "The bytes before the next ``delimiter`` (a zero-copy slice), and the\n"
     "position moves past the delimiter (or onto it: ``advance_past=False``).\n"
     "None when no delimiter has arrived yet."},
    {"try_read_bytes_to", FN(Reader_try_read_bytes_to), FASTKW,
     "try_read_bytes_to($self, delimiter, advance_past=True)\n--\n\n"
     "``try_read_to`` for short tokens a parser keeps (a length line, a\n"
     "key, a header name): the bytes before the delimiter as one ``bytes``\n"
     "copy instead of a view.  None when no delimiter has arrived yet."},
    {"try_read_exact", FN(Reader_try_read_exact), FASTKW,
     "try_read_exact($self, n)\n--\n\n"
     "The next ``n`` bytes (a zero-copy slice), or None if fewer arrived."},
    {"try_read_bytes", FN(Reader_try_read_bytes), FASTKW,
     "try_read_bytes($self, n)\n--\n\n"
     "``try_read_exact`` as one ``bytes`` copy (for short values a parser\n"
     "keeps), or None if fewer than ``n`` bytes arrived."},
    {"try_read_int", FN(Reader_try_read_int), FASTKW,
     "try_read_int($self, length, byteorder='big', *, signed=False)\n--\n\n"
     "The next ``length`` bytes as an integer (``int.from_bytes`` rules),\n"
     "or None if fewer arrived.  Copies only those bytes."},
    {"try_read_decimal", FN(Reader_try_read_decimal), FASTKW,
     "try_read_decimal($self, prefix=b'', delimiter=b'\\r\\n', *, signed=False, "
     "limit=9223372036854775807)\n--\n\n"
     "The ASCII decimal number framed by ``prefix`` and ``delimiter``, and\n"
     "the position moves past the delimiter; None when those bytes have not\n"
     "all arrived yet.  ValueError (nothing moved) as soon as the bytes cannot\n"
     "make one: 1 to 19 digits, ``-`` only when ``signed``, abs <= ``limit``."},
    {"try_read_byte", (PyCFunction)Reader_try_read_byte, METH_NOARGS,
     "try_read_byte($self)\n--\n\nThe next byte, or None at the end."},
    {"skip", FN(Reader_skip), FASTKW,
     "skip($self, byte_values)\n--\n\n"
     "Move past every leading byte that is one of ``byte_values`` (bytes, or\n"
     "one int); returns how many were skipped.  Reads segments in place."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.SequenceReader",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "SequenceReader(seq)\n--\n\n"
              "A forward cursor over ``seq`` (a BufferSequence), for parsers: a\n"
              "position that only moves forward unless rewound, and reads that\n"
              "either succeed whole or return None and leave the position where\n"
              "it was.  Pass ``(reader.consumed, reader.examined)`` to\n"
              "``PipeReader.advance_to`` so the next read waits for new bytes.\n"
              "The C implementation of zerg._seqreader.SequenceReader.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_vectorcall = Reader_vectorcall,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_repr = (reprfunc)Reader_repr,
    .tp_getset = Reader_getset,
    .tp_methods = Reader_methods,
};

/* ------------------------------------------- for native parsers (speedups.h) */

int
reader_chain(PyObject *obj, Chain *c, Py_ssize_t *pos)
{
    if (!PyObject_TypeCheck(obj, &ReaderType))
        return 1;
    ReaderObject *self = (ReaderObject *)obj;
    if (live_chain(self, c) < 0)
        return -1;
    *pos = self->pos;
    return 0;
}

void
reader_moved(PyObject *obj, Py_ssize_t pos, Py_ssize_t examined)
{
    ReaderObject *self = (ReaderObject *)obj;
    self->pos = pos;
    look(self, examined);
}

int
reader_take(PyObject *obj, Py_ssize_t n, PyObject **out)
{
    return take((ReaderObject *)obj, n, 0, out);
}

int
readerfast_init(PyObject *module)
{
    if (PyType_Ready(&ReaderType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "SequenceReader", (PyObject *)&ReaderType);
}
