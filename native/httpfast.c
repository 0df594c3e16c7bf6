/*
 * httpfast.c -- zerg.http.parse_request_head and RequestHead in C.
 *
 * Why: an HTTP server on zerg spent three quarters of its CPU in the head
 * parser (examples/http.py under pipelined load): a line read, a split, a
 * partition, three regular expressions, a dict lookup and a lower() per
 * field, each an interpreter round.  Here the same rules run over the
 * bytes once, and the only objects made are the ones the caller gets.
 *
 * What: the same function as zerg.http.py_parse_request_head (the
 * reference): the same results, errors, messages, and the same position
 * and ``examined`` of the reader afterwards; tests/test_http1.py drives both
 * with the same random bytes.  It reads a C zerg.SequenceReader only (a
 * TypeError names the reference for any other reader).
 *
 * How: phase one walks the head line by line over the sequence's chain
 * (speedups.h), copying each line into a scratch buffer and validating it
 * in order, so an error is raised exactly where the reference raises it;
 * it makes no Python object, so the chain's borrowed pointers stay valid.
 * Phase two builds the result from the scratch buffer only.
 *
 * Rules: as speedups.c -- reference counts on every path, errors
 * propagated, the GIL held throughout.
 */
#include "speedups.h"

#include <structmember.h>
#include <string.h>

static PyObject *http_error;            /* zerg.http.HttpError (bind_http) */
static PyObject *no_body;               /* the empty BufferSequence of a request without one */
static PyObject *v11, *v10;             /* b"HTTP/1.1", b"HTTP/1.0" */
static PyObject *m_get, *m_head, *m_post;
static PyObject *str_max_size, *str_max_fields, *str_max_body;  /* interned keyword names */

/* ------------------------------------------------------------ RequestHead */

/* A head made by the parser keeps its fields as one bytes object, each
 * field a line "name:value\n" (names are tokens and values hold no control
 * character, so the split is unambiguous), and makes the `headers` list of
 * tuples only when it is asked for: a request whose fields nobody reads (or
 * reads with get()) costs one object for them instead of three per field.
 * Until then it holds no container, so it stays out of the collector's
 * lists, as a tuple of atoms does.
 *
 * Every attribute a handler reads per request is an object member
 * (T_OBJECT_EX), keep_alive included (Py_True or Py_False): the interpreter
 * specializes loads of those (LOAD_ATTR_SLOT), not of a C char. */
typedef struct {
    PyObject_HEAD
    PyObject *method, *target, *version, *content_length;
    PyObject *path;             /* target up to its first '?' (target itself without one) */
    PyObject *keep_alive;       /* Py_True or Py_False */
    PyObject *headers;          /* the list; NULL until asked for (parser-made) */
    PyObject *fields;           /* bytes "name:value\n"...; NULL when made from a list */
    Py_ssize_t nfields;         /* lines in fields */
} HeadObject;

static PyTypeObject HeadType;

static int
Head_traverse(HeadObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->headers);
    return 0;
}

static int
Head_clear(HeadObject *self)
{
    Py_CLEAR(self->method);
    Py_CLEAR(self->target);
    Py_CLEAR(self->version);
    Py_CLEAR(self->content_length);
    Py_CLEAR(self->path);
    Py_CLEAR(self->keep_alive);
    Py_CLEAR(self->headers);
    Py_CLEAR(self->fields);
    return 0;
}

static void
Head_dealloc(HeadObject *self)
{
    PyObject_GC_UnTrack(self);
    (void)Head_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* target's path: up to its first '?', target itself without one (a new
 * reference; NULL with an exception). */
static PyObject *
target_path(PyObject *target)
{
    if (!PyBytes_Check(target))
        return Py_NewRef(target);           /* made from Python with something else */
    const char *t = PyBytes_AS_STRING(target);
    const char *q = memchr(t, '?', (size_t)PyBytes_GET_SIZE(target));
    return q == NULL ? Py_NewRef(target) : PyBytes_FromStringAndSize(t, q - t);
}

/* The new head; steals every reference (NULL-safe: any NULL fails it).
 * Exactly one of headers (a list) and fields (the parser's bytes) is given. */
static PyObject *
head_new(PyTypeObject *type, PyObject *method, PyObject *target, PyObject *version,
         PyObject *headers, PyObject *fields, Py_ssize_t nfields, PyObject *content_length,
         int keep_alive)
{
    HeadObject *self = NULL;
    PyObject *path = target == NULL ? NULL : target_path(target);
    if (method != NULL && target != NULL && path != NULL && version != NULL
            && (headers != NULL || fields != NULL) && content_length != NULL)
        self = (HeadObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(path);
        Py_XDECREF(method);
        Py_XDECREF(target);
        Py_XDECREF(version);
        Py_XDECREF(headers);
        Py_XDECREF(fields);
        Py_XDECREF(content_length);
        return NULL;
    }
    self->method = method;
    self->target = target;
    self->path = path;
    self->version = version;
    self->headers = headers;
    self->fields = fields;
    self->nfields = nfields;
    self->content_length = content_length;
    self->keep_alive = Py_NewRef(keep_alive ? Py_True : Py_False);
    if (headers == NULL && type == &HeadType)
        PyObject_GC_UnTrack(self);      /* atoms only, until headers is made */
    return (PyObject *)self;
}

static PyObject *
Head_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"method", "target", "version", "headers", "content_length",
                             "keep_alive", NULL};
    PyObject *method, *target, *version, *headers, *length;
    int keep;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOOOOp:RequestHead", kwlist, &method,
                                     &target, &version, &headers, &length, &keep))
        return NULL;
    return head_new(type, Py_NewRef(method), Py_NewRef(target), Py_NewRef(version),
                    Py_NewRef(headers), NULL, 0, Py_NewRef(length), keep);
}

/* The fields' lines, one at a time: *name, *nn, *value, *vn for the line at
 * *pos, which moves to the next; 0 at the end. */
static int
next_field(PyObject *fields, Py_ssize_t *pos, const char **name, Py_ssize_t *nn,
           const char **value, Py_ssize_t *vn)
{
    const char *p = PyBytes_AS_STRING(fields), *end = p + PyBytes_GET_SIZE(fields);
    const char *line = p + *pos;
    if (line >= end)
        return 0;
    const char *lf = memchr(line, '\n', (size_t)(end - line));
    const char *colon = memchr(line, ':', (size_t)((lf ? lf : end) - line));
    if (lf == NULL || colon == NULL)
        return 0;                       /* not the parser's bytes: never happens */
    *name = line;
    *nn = colon - line;
    *value = colon + 1;
    *vn = lf - colon - 1;
    *pos = lf - p + 1;
    return 1;
}

static PyObject *
Head_get_headers(HeadObject *self, void *Py_UNUSED(closure))
{
    if (self->headers != NULL)
        return Py_NewRef(self->headers);
    PyObject *list = PyList_New(self->nfields);
    if (list == NULL)
        return NULL;
    Py_ssize_t pos = 0, nn, vn;
    const char *name, *value;
    for (Py_ssize_t i = 0; i < self->nfields; i++) {
        if (!next_field(self->fields, &pos, &name, &nn, &value, &vn)) {
            PyErr_SetString(PyExc_SystemError, "RequestHead: its fields are damaged");
            Py_DECREF(list);
            return NULL;
        }
        PyObject *pair = Py_BuildValue("(y#y#)", name, nn, value, vn);
        if (pair == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, pair);
    }
    self->headers = list;
    Py_CLEAR(self->fields);
    if (!PyObject_GC_IsTracked((PyObject *)self))
        PyObject_GC_Track(self);        /* it holds a container now */
    return Py_NewRef(list);
}

/* a[0:an] equals b[0:bn], ignoring ASCII case (as bytes.lower() does). */
static int
same_name(const char *a, Py_ssize_t an, const char *b, Py_ssize_t bn)
{
    if (an != bn)
        return 0;
    for (Py_ssize_t i = 0; i < an; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y + 32);
        if (x != y)
            return 0;
    }
    return 1;
}

static PyObject *
Head_get(HeadObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "get() takes 1 or 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *want = args[0], *dflt = nargs == 2 ? args[1] : Py_None;
    if (!PyBytes_Check(want)) {
        PyErr_Format(PyExc_TypeError, "get() takes the field name as bytes, not %.100s",
                     Py_TYPE(want)->tp_name);
        return NULL;
    }
    const char *w = PyBytes_AS_STRING(want);
    Py_ssize_t wn = PyBytes_GET_SIZE(want);
    if (self->headers == NULL) {
        Py_ssize_t pos = 0, nn, vn;
        const char *name, *value;
        while (next_field(self->fields, &pos, &name, &nn, &value, &vn)) {
            if (same_name(name, nn, w, wn))
                return PyBytes_FromStringAndSize(value, vn);
        }
        return Py_NewRef(dflt);
    }
    /* Made from a list (or asked for it): the list, as the reference reads it. */
    PyObject *list = Py_NewRef(self->headers);
    PyObject *iter = PyObject_GetIter(list);
    Py_DECREF(list);
    if (iter == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(iter)) != NULL) {
        PyObject *name, *value;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2
                || !PyBytes_Check(name = PyTuple_GET_ITEM(item, 0))) {
            PyErr_SetString(PyExc_TypeError, "RequestHead.get(): headers holds something "
                                             "other than (bytes, value) pairs");
            Py_DECREF(item);
            Py_DECREF(iter);
            return NULL;
        }
        if (same_name(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), w, wn)) {
            value = Py_NewRef(PyTuple_GET_ITEM(item, 1));
            Py_DECREF(item);
            Py_DECREF(iter);
            return value;
        }
        Py_DECREF(item);
    }
    Py_DECREF(iter);
    if (PyErr_Occurred())
        return NULL;
    return Py_NewRef(dflt);
}

static PyObject *
Head_repr(HeadObject *self)
{
    Py_ssize_t n = self->headers == NULL ? self->nfields : PyObject_Length(self->headers);
    if (n < 0)
        return NULL;
    return PyUnicode_FromFormat("<RequestHead %R %R %R fields=%zd content_length=%S "
                                "keep_alive=%s>", self->method, self->target, self->version, n,
                                self->content_length, self->keep_alive == Py_True ? "True" : "False");
}

static PyMemberDef Head_members[] = {
    {"method", T_OBJECT_EX, offsetof(HeadObject, method), READONLY,
     "The method, as sent (bytes)."},
    {"target", T_OBJECT_EX, offsetof(HeadObject, target), READONLY,
     "The request target, as sent (bytes)."},
    {"version", T_OBJECT_EX, offsetof(HeadObject, version), READONLY,
     "b'HTTP/1.1' or b'HTTP/1.0'."},
    {"content_length", T_OBJECT_EX, offsetof(HeadObject, content_length), READONLY,
     "The body's length in bytes (0 without Content-Length)."},
    {"keep_alive", T_OBJECT_EX, offsetof(HeadObject, keep_alive), READONLY,
     "Whether the connection stays open after the reply."},
    {"path", T_OBJECT_EX, offsetof(HeadObject, path), READONLY,
     "The target up to its first '?' (the target itself without one)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Head_getset[] = {
    {"headers", (getter)Head_get_headers, NULL,
     "The fields in order: a list of (name, value) bytes, values stripped\n"
     "(made on first use).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Head_methods[] = {
    {"get", (PyCFunction)(void (*)(void))Head_get, METH_FASTCALL,
     "get($self, name, default=None, /)\n--\n\n"
     "The value of the first field called ``name`` (bytes, any case), or\n"
     "``default``.  Reads the fields in place: no list is made."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.RequestHead",
    .tp_basicsize = sizeof(HeadObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RequestHead(method, target, version, headers, content_length, keep_alive)\n"
              "--\n\n"
              "A parsed request head (zerg.http.parse_request_head); the C\n"
              "implementation of zerg.http.PyRequestHead.",
    .tp_new = Head_new,
    .tp_dealloc = (destructor)Head_dealloc,
    .tp_traverse = (traverseproc)Head_traverse,
    .tp_clear = (inquiry)Head_clear,
    .tp_repr = (reprfunc)Head_repr,
    .tp_members = Head_members,
    .tp_getset = Head_getset,
    .tp_methods = Head_methods,
};

/* ---------------------------------------------------------------- parsing */

/* RFC 9110 tchar. */
static unsigned char is_tchar[256];
/* The bytes a field value may not hold: controls but HTAB, and DEL; and the
 * bytes a request target may hold: visible ASCII.  Tables, so each byte of
 * a head is one load and one test. */
static unsigned char is_ctl[256], is_vchar[256];

static int
all_tchar(const char *p, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!is_tchar[(unsigned char)p[i]])
            return 0;
    }
    return 1;
}

static int
has_ctl(const char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (is_ctl[(unsigned char)p[i]])
            return 1;
    }
    return 0;
}

/* p[0:n] is the ASCII word w (a string literal), in any case. */
#define IS_WORD(p, n, w) same_name((p), (n), (w), (Py_ssize_t)(sizeof(w) - 1))

static void
strip_sp(const char **p, Py_ssize_t *n)
{
    while (*n > 0 && (**p == ' ' || **p == '\t')) {
        (*p)++;
        (*n)--;
    }
    while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
        (*n)--;
}

typedef struct {
    Py_ssize_t name, name_n, value, value_n;   /* offsets in the scratch buffer */
} Field;

typedef struct {
    /* the lines, copied */
    char *buf;
    Py_ssize_t used, cap;
    char small[1024];
    /* the fields */
    Field *fields;
    Py_ssize_t nfields, fcap;
    Field fsmall[16];
} Scratch;

static void
scratch_init(Scratch *s)
{
    s->buf = s->small;
    s->used = 0;
    s->cap = (Py_ssize_t)sizeof(s->small);
    s->fields = s->fsmall;
    s->nfields = 0;
    s->fcap = (Py_ssize_t)(sizeof(s->fsmall) / sizeof(s->fsmall[0]));
}

static void
scratch_free(Scratch *s)
{
    if (s->buf != s->small)
        PyMem_Free(s->buf);
    if (s->fields != s->fsmall)
        PyMem_Free(s->fields);
}

/* Room for n more bytes: 0, or -1 with MemoryError. */
static int
scratch_room(Scratch *s, Py_ssize_t n)
{
    if (s->cap - s->used >= n)
        return 0;
    Py_ssize_t cap = s->cap;
    while (cap - s->used < n) {
        if (cap > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *p = PyMem_Malloc((size_t)cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(p, s->buf, (size_t)s->used);
    if (s->buf != s->small)
        PyMem_Free(s->buf);
    s->buf = p;
    s->cap = cap;
    return 0;
}

static int
scratch_field(Scratch *s, Field f)
{
    if (s->nfields == s->fcap) {
        Py_ssize_t cap = s->fcap * 2;
        Field *p = PyMem_Malloc((size_t)cap * sizeof(Field));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(p, s->fields, (size_t)s->nfields * sizeof(Field));
        if (s->fields != s->fsmall)
            PyMem_Free(s->fields);
        s->fields = p;
        s->fcap = cap;
    }
    s->fields[s->nfields++] = f;
    return 0;
}

typedef struct {
    Chain c;
    Py_ssize_t at;              /* the next line's first byte (sequence offset) */
    Py_ssize_t examined;
    /* The segment holding `at` when the walk began (chain coordinates
     * [seg_s, seg_e)), read by pointer: a head in one segment, the common
     * case, is searched with memchr alone.  seg is NULL when not loaded. */
    const char *seg;
    Py_ssize_t seg_s, seg_e;
    Scratch s;
} Walk;

/* Load the segment holding the walk's start (best effort: a chain it cannot
 * read leaves seg NULL, and every line takes the general path). */
static void
walk_segment(Walk *w)
{
    Py_ssize_t k, a = w->c.start + w->at;
    w->seg = NULL;
    if (a < w->c.stop && chain_locate(&w->c, a, &k) == CHAIN_OK
            && chain_seg(&w->c, k, &w->seg, &w->seg_s, &w->seg_e) != CHAIN_OK)
        w->seg = NULL;
}

/* The next line (without its LF) copied to the scratch buffer at *off, *n
 * bytes: 1; 0 when no LF has arrived (examined: the end); -1 with an
 * exception. */
static int
next_line(Walk *w, Py_ssize_t *off, Py_ssize_t *n)
{
    Py_ssize_t len = w->c.stop - w->c.start, a = w->c.start + w->at, m = -1;
    const char *p = NULL;       /* the line's bytes in the walk's segment, if there */
    if (w->seg != NULL && a >= w->seg_s && a < w->seg_e) {
        Py_ssize_t e = w->seg_e < w->c.stop ? w->seg_e : w->c.stop;
        const char *lf = memchr(w->seg + (a - w->seg_s), '\n', (size_t)(e - a));
        if (lf != NULL) {
            p = w->seg + (a - w->seg_s);
            m = lf - p;
        }
    }
    if (m < 0) {                /* across segments, or another one: the chain's search */
        Py_ssize_t found = -1;
        if (w->at <= len && chain_ok(chain_find(&w->c, "\n", 1, a, w->c.stop, &found)) < 0)
            return -1;
        if (found < 0) {
            if (len > w->examined)
                w->examined = len;
            return 0;
        }
        m = found - a;
    }
    if (scratch_room(&w->s, m) < 0)
        return -1;
    if (p != NULL)
        memcpy(w->s.buf + w->s.used, p, (size_t)m);
    else if (chain_ok(chain_copy(&w->c, w->s.buf + w->s.used, a, a + m)) < 0)
        return -1;
    *off = w->s.used;
    *n = m;
    w->s.used += m;
    w->at += m + 1;
    if (w->at > w->examined)
        w->examined = w->at;
    return 1;
}

static PyObject *
http_raise(int status, const char *why)
{
    PyObject *exc = PyObject_CallFunction(http_error, "is", status, why);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* The method as bytes: the common ones shared. */
static PyObject *
method_bytes(const char *p, Py_ssize_t n)
{
    if (n == 3 && memcmp(p, "GET", 3) == 0)
        return Py_NewRef(m_get);
    if (n == 4 && memcmp(p, "HEAD", 4) == 0)
        return Py_NewRef(m_head);
    if (n == 4 && memcmp(p, "POST", 4) == 0)
        return Py_NewRef(m_post);
    return PyBytes_FromStringAndSize(p, n);
}

/* Phase two: the RequestHead from the scratch buffer. */
static PyObject *
build(const Scratch *s, Py_ssize_t line, Py_ssize_t sp1, Py_ssize_t sp2, int http11,
      unsigned long long length, int keep_alive)
{
    Py_ssize_t size = 0;
    for (Py_ssize_t i = 0; i < s->nfields; i++)
        size += s->fields[i].name_n + s->fields[i].value_n + 2;
    PyObject *fields = PyBytes_FromStringAndSize(NULL, size);
    if (fields == NULL)
        return NULL;
    char *out = PyBytes_AS_STRING(fields);
    for (Py_ssize_t i = 0; i < s->nfields; i++) {
        const Field *f = &s->fields[i];
        memcpy(out, s->buf + f->name, (size_t)f->name_n);
        out += f->name_n;
        *out++ = ':';
        memcpy(out, s->buf + f->value, (size_t)f->value_n);
        out += f->value_n;
        *out++ = '\n';
    }
    const char *p = s->buf + line;
    PyObject *method = method_bytes(p, sp1);
    if (method == NULL) {
        Py_DECREF(fields);
        return NULL;
    }
    PyObject *target = PyBytes_FromStringAndSize(p + sp1 + 1, sp2 - sp1 - 1);
    if (target == NULL) {
        Py_DECREF(method);
        Py_DECREF(fields);
        return NULL;
    }
    PyObject *cl = PyLong_FromUnsignedLongLong(length);
    if (cl == NULL) {
        Py_DECREF(target);
        Py_DECREF(method);
        Py_DECREF(fields);
        return NULL;
    }
    return head_new(&HeadType, method, target, Py_NewRef(http11 ? v11 : v10), NULL, fields,
                    s->nfields, cl, keep_alive);
}

/* Phase one.  Returns the head, or NULL: with an exception, or without one
 * when the head has not all arrived.  w->at ends past the head. */
static PyObject *
walk(Walk *w, Py_ssize_t start, Py_ssize_t limit, Py_ssize_t max_fields)
{
    Py_ssize_t line, n, off;
    int rc = next_line(w, &line, &n);
    if (rc <= 0)
        return NULL;
    const char *p = w->s.buf + line;
    int crlf = n > 0 && p[n - 1] == '\r';
    if (crlf)
        n--;
    /* method SP target SP version: exactly two spaces */
    const char *a = memchr(p, ' ', (size_t)n);
    const char *b = a == NULL ? NULL : memchr(a + 1, ' ', (size_t)(p + n - a - 1));
    if (b == NULL || memchr(b + 1, ' ', (size_t)(p + n - b - 1)) != NULL
            || !all_tchar(p, a - p) || b - a - 1 == 0)
        return http_raise(400, "malformed request line");
    for (const char *q = a + 1; q < b; q++) {
        if (!is_vchar[(unsigned char)*q])
            return http_raise(400, "malformed request line");
    }
    const char *v = b + 1;
    Py_ssize_t vn = p + n - v;
    int http11 = vn == 8 && memcmp(v, "HTTP/1.1", 8) == 0;
    if (!http11 && !(vn == 8 && memcmp(v, "HTTP/1.0", 8) == 0)) {
        if (vn == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9'
                && v[6] == '.' && v[7] >= '0' && v[7] <= '9')
            return http_raise(505, "unsupported HTTP version");
        return http_raise(400, "malformed HTTP version");
    }
    Py_ssize_t sp1 = a - p, sp2 = b - p;
    unsigned long long length = 0;
    int seen_length = 0, hosts = 0, close = 0, keep = 0;
    for (;;) {
        rc = next_line(w, &off, &n);
        if (rc <= 0)
            return NULL;
        p = w->s.buf + off;
        if (crlf) {
            if (n == 0 || p[n - 1] != '\r')
                return http_raise(400, "mixed line ends");
            n--;
        }
        if (n == 0)
            break;
        if (w->at - start > limit || w->s.nfields == max_fields)
            return http_raise(431, w->s.nfields < max_fields ? "header block too large"
                                                             : "too many header fields");
        const char *colon = memchr(p, ':', (size_t)n);
        if (colon == NULL)
            return http_raise(400, "malformed header field");
        const char *val = colon + 1;
        Py_ssize_t val_n = p + n - val, name_n = colon - p;
        strip_sp(&val, &val_n);
        if (!all_tchar(p, name_n) || has_ctl(val, val_n))
            return http_raise(400, "malformed header field");
        Field f = {off, name_n, val - w->s.buf, val_n};
        if (scratch_field(&w->s, f) < 0)
            return NULL;
        if (IS_WORD(p, name_n, "content-length")) {
            int ok = val_n >= 1 && val_n <= 19;
            unsigned long long x = 0;
            for (Py_ssize_t i = 0; ok && i < val_n; i++) {
                if (val[i] < '0' || val[i] > '9')
                    ok = 0;
                else
                    x = x * 10 + (unsigned long long)(val[i] - '0');
            }
            if (!ok || (seen_length && x != length))
                return http_raise(400, "bad Content-Length");
            length = x;
            seen_length = 1;
        }
        else if (IS_WORD(p, name_n, "host")) {
            hosts++;
        }
        else if (IS_WORD(p, name_n, "connection")) {
            const char *o = val, *stop = val + val_n;
            for (;;) {          /* value.lower().split(b","), each stripped */
                const char *comma = memchr(o, ',', (size_t)(stop - o));
                const char *oe = comma == NULL ? stop : comma;
                Py_ssize_t on = oe - o;
                const char *os = o;
                strip_sp(&os, &on);
                if (IS_WORD(os, on, "close"))
                    close = 1;
                else if (IS_WORD(os, on, "keep-alive"))
                    keep = 1;
                if (comma == NULL)
                    break;
                o = comma + 1;
            }
        }
        else if (IS_WORD(p, name_n, "transfer-encoding")) {
            return http_raise(501, "Transfer-Encoding is not supported");
        }
    }
    if (w->at - start > limit)
        return http_raise(431, "header block too large");
    if (hosts > 1 || (hosts == 0 && http11))
        return http_raise(400, "an HTTP/1.1 request needs exactly one Host");
    return build(&w->s, line, sp1, sp2, http11, length, !close && (http11 || keep));
}

static int
size_arg(const char *fname, PyObject *obj, const char *name, Py_ssize_t *v)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be an int, not %.100s", fname,
                     name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    *v = PyLong_AsSsize_t(obj);
    if (*v == -1 && PyErr_Occurred())
        return -1;
    if (*v < 0) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be >= 0, not %zd", fname, name, *v);
        return -1;
    }
    return 0;
}

/* The arguments of both parsers: one positional (the reader, in *sr), the
 * keyword-only limits max_size and max_fields, and max_body when max_body
 * is not NULL (parse_request).  0, or -1 with an exception. */
static int
parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           PyObject **sr, Py_ssize_t *max_size, Py_ssize_t *max_fields, Py_ssize_t *max_body)
{
    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError, "%s() takes 1 positional argument (%zd given)", fname,
                     nargs);
        return -1;
    }
    *sr = args[0];
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t j = 0; j < nkw; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j), *val = args[nargs + j];
        /* Names in a call are interned: identity first, then by value. */
        PyObject *names[3] = {str_max_size, str_max_fields, str_max_body};
        static const char *const cnames[3] = {"max_size", "max_fields", "max_body"};
        Py_ssize_t *slots[3] = {max_size, max_fields, max_body};
        int which = -1;
        for (int i = 0; i < 3 && which < 0; i++) {
            if (key == names[i])
                which = i;
        }
        for (int i = 0; i < 3 && which < 0; i++) {
            if (PyUnicode_Compare(key, names[i]) == 0)
                which = i;
        }
        if (which < 0 || slots[which] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                         fname, key);
            return -1;
        }
        if (size_arg(fname, val, cnames[which], slots[which]) < 0)
            return -1;
    }
    if (http_error == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_http() was not called");
        return -1;
    }
    return 0;
}

/* The head at the position of reader sr (*start): the head with sr past it;
 * NULL with an exception (sr where it was); NULL without one while the head
 * has not all arrived (sr where it was).  1 in *not_c, and no exception,
 * when sr is no C SequenceReader. */
static PyObject *
head_at(PyObject *sr, Py_ssize_t max_size, Py_ssize_t max_fields, Py_ssize_t *start,
        int *not_c)
{
    Walk w;
    int rc = reader_chain(sr, &w.c, start);
    *not_c = rc > 0;
    if (rc != 0)
        return NULL;
    if (max_size > PY_SSIZE_T_MAX - 2)
        max_size = PY_SSIZE_T_MAX - 2;
    Py_ssize_t limit = max_size + 2;
    w.at = *start;
    w.examined = *start;
    walk_segment(&w);
    scratch_init(&w.s);
    PyObject *head = walk(&w, *start, limit, max_fields);
    scratch_free(&w.s);
    if (head != NULL) {
        reader_moved(sr, w.at, w.examined);
        return head;
    }
    reader_moved(sr, *start, w.examined);
    if (!PyErr_Occurred() && w.c.stop - w.c.start - *start > limit)
        (void)http_raise(431, "header block too large");
    return NULL;
}

static PyObject *
not_c_reader(const char *fname, PyObject *sr)
{
    PyErr_Format(PyExc_TypeError, "%s() reads a zerg.SequenceReader, not %.100s "
                 "(zerg.http.py_%s reads any)", fname, Py_TYPE(sr)->tp_name, fname);
    return NULL;
}

static PyObject *
parse_request_head(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs,
                   PyObject *kwnames)
{
    PyObject *sr;
    Py_ssize_t max_size = 8192, max_fields = 100, start;
    int not_c;
    if (parse_args("parse_request_head", args, nargs, kwnames, &sr, &max_size, &max_fields,
                   NULL) < 0)
        return NULL;
    PyObject *head = head_at(sr, max_size, max_fields, &start, &not_c);
    if (not_c)
        return not_c_reader("parse_request_head", sr);
    if (head == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return head;
}

/* zerg.http.py_parse_request: the head, then its Content-Length bytes as a
 * zero-copy slice -- one call instead of a Python function around
 * parse_request_head and try_read_exact. */
static PyObject *
parse_request(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs,
              PyObject *kwnames)
{
    PyObject *sr, *body;
    Py_ssize_t max_size = 8192, max_fields = 100, max_body = 1048576, start;
    int not_c;
    if (parse_args("parse_request", args, nargs, kwnames, &sr, &max_size, &max_fields,
                   &max_body) < 0)
        return NULL;
    PyObject *head = head_at(sr, max_size, max_fields, &start, &not_c);
    if (not_c)
        return not_c_reader("parse_request", sr);
    if (head == NULL)
        return PyErr_Occurred() ? NULL : PyLong_FromLong(0);   /* NEED_HEAD */
    unsigned long long length = PyLong_AsUnsignedLongLong(((HeadObject *)head)->content_length);
    if (length == (unsigned long long)-1 && PyErr_Occurred()) {
        Py_DECREF(head);
        return NULL;
    }
    int rc = 0;
    if (length > (unsigned long long)max_body) {
        reader_moved(sr, start, start);
        Py_DECREF(head);
        return http_raise(413, "body too large");
    }
    if (length == 0)
        body = Py_NewRef(no_body);
    else
        rc = reader_take(sr, (Py_ssize_t)length, &body);
    if (rc != 0) {
        Py_DECREF(head);
        if (rc < 0)
            return NULL;
        /* Not all there: how many bytes are missing, the reader where it was
         * (reader_take examined to the end). */
        Chain c;
        Py_ssize_t pos;
        if (reader_chain(sr, &c, &pos) < 0)
            return NULL;
        Py_ssize_t missing = (Py_ssize_t)length - (c.stop - c.start - pos);
        reader_moved(sr, start, start);
        return PyLong_FromSsize_t(missing);
    }
    PyObject *pair = PyTuple_Pack(2, head, body);
    Py_DECREF(head);
    Py_DECREF(body);
    return pair;
}

static PyObject *
bind_http(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyType_Check(args[0])
            || !PyType_IsSubtype((PyTypeObject *)args[0], (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "bind_http() takes an exception class and the "
                                         "empty body");
        return NULL;
    }
    Py_XSETREF(http_error, Py_NewRef(args[0]));
    Py_XSETREF(no_body, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyMethodDef httpfast_methods[] = {
    {"parse_request_head", (PyCFunction)(void (*)(void))parse_request_head,
     METH_FASTCALL | METH_KEYWORDS,
     "parse_request_head(sr, *, max_size=8192, max_fields=100)\n--\n\n"
     "Parse the HTTP/1.x request head at the position of ``sr`` (a\n"
     "zerg.SequenceReader): the RequestHead with ``sr`` past it, or None with\n"
     "``sr`` where it was while the head has not all arrived; HttpError (``sr``\n"
     "where it was) for a head that must be refused.  The C implementation of\n"
     "zerg.http.py_parse_request_head."},
    {"parse_request", (PyCFunction)(void (*)(void))parse_request,
     METH_FASTCALL | METH_KEYWORDS,
     "parse_request(sr, *, max_size=8192, max_fields=100, max_body=1048576)\n--\n\n"
     "The request at the position of ``sr``: (head, body) with ``sr`` past it,\n"
     "or an int with ``sr`` where it was.  The C implementation of\n"
     "zerg.http.py_parse_request."},
    {"bind_http", (PyCFunction)(void (*)(void))bind_http, METH_FASTCALL,
     "bind_http(error, no_body, /)\n--\n\n"
     "The exception class the parsers raise and the empty body (zerg.http)."},
    {NULL, NULL, 0, NULL},
};

int
httpfast_init(PyObject *module)
{
    const char *t = "!#$%&'*+-.^_`|~";
    for (int ch = 0; ch < 256; ch++)
        is_tchar[ch] = (unsigned char)((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z')
                                       || (ch >= 'A' && ch <= 'Z'));
    for (; *t; t++)
        is_tchar[(unsigned char)*t] = 1;
    for (int ch = 0; ch < 256; ch++) {
        is_ctl[ch] = (unsigned char)((ch < 0x20 && ch != '\t') || ch == 0x7f);
        is_vchar[ch] = (unsigned char)(ch >= 0x21 && ch <= 0x7e);
    }
    if (PyType_Ready(&HeadType) < 0)
        return -1;
    v11 = PyBytes_FromString("HTTP/1.1");
    v10 = PyBytes_FromString("HTTP/1.0");
    m_get = PyBytes_FromString("GET");
    m_head = PyBytes_FromString("HEAD");
    m_post = PyBytes_FromString("POST");
    if (v11 == NULL || v10 == NULL || m_get == NULL || m_head == NULL || m_post == NULL)
        return -1;
    str_max_size = PyUnicode_InternFromString("max_size");
    str_max_fields = PyUnicode_InternFromString("max_fields");
    str_max_body = PyUnicode_InternFromString("max_body");
    if (str_max_size == NULL || str_max_fields == NULL || str_max_body == NULL)
        return -1;
    if (PyModule_AddFunctions(module, httpfast_methods) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "RequestHead", (PyObject *)&HeadType);
}
