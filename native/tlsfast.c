/*
 * tlsfast.c -- the TLS layer's per-record work in C (zerg._speedups).
 *
 * Why: over TLS, every request crosses three Python methods of the layer
 * (zerg/_tls.py, _TlsLayer): on_recv (ciphertext into the BIO, one record
 * out of SSLObject.read, the plaintext to the plain connection), write (one
 * SSLObject.write, the records staged with the plain write) and flush.  The
 * OpenSSL calls are C already; the frames around them are most of what TLS
 * adds per request on top of a plain connection.  uvloop's SSLProtocol is
 * compiled (Cython); this is the same step for zerg.
 *
 * How: as connfast.c.  bind_tls() learns the __slots__ offsets of
 * _TlsState, TlsSession and PlainSlots and of the two concrete connection
 * classes' _tls, and puts these methods in _TlsLayer, keeping the Python
 * ones as the reference.  Each C method does the common case -- the layer's
 * `fast` flag set (established, open, nothing spilled, nothing early), the
 * owner's thread, exact types -- and otherwise calls the reference *before
 * changing anything*.  on_recv, once it has fed the BIO and read a record,
 * hands anything but "one whole record, nothing left behind" to
 * _TlsLayer._decrypted, the reference's own continuation.
 *
 * Rules: as speedups.c -- reference counts written out on every path, every
 * error propagated, the GIL held throughout (nothing here waits).
 */
#include "speedups.h"

#include <pythread.h>

static PyTypeObject *layer_type;        /* zerg._tls._TlsLayer */
static PyTypeObject *conn_types[2];     /* TlsConnection, TlsProtocolConnection */
static Py_ssize_t conn_tls[2];          /* ... their _tls field */
static PyTypeObject *state_type;        /* _TlsState */
static PyTypeObject *session_type;      /* TlsSession */
static PyTypeObject *plain_type;        /* PlainSlots */
static PyObject *want_read_exc, *ssl_error_exc, *full_exc;  /* SSLWantReadError, SSLError,
                                                               WriteBufferFullError */
static PyObject *read_size;             /* READ_SIZE, an int */
static Py_ssize_t encrypt_chunk;        /* _ENCRYPT_CHUNK */
static PyObject *done;                  /* the finished coroutine of the C flush */
static PyObject *ref_on_recv, *ref_write, *ref_flush, *ref_pending_write_bytes;
static PyObject *s_decrypted, *s_tls_error, *s_spill, *s_flush_nowait, *s_pump, *s_pending;

static struct {
    Py_ssize_t state, session, fast, feed, ssl_read, ssl_pending, incoming, out_pending, plain,
        plain_on_recv, plain_write, ring, owner, cap, ssl_write, out_read, refused, pause_at,
        spill_bytes, early_bytes;
    Py_ssize_t peer_closed;             /* TlsSession */
    Py_ssize_t bufs, next;              /* PlainSlots */
} T;

/* The _TlsState of self (borrowed) when self is of a bound connection class
 * and the state of the state's type; NULL otherwise (not an error). */
static PyObject *
tls_state(PyObject *self)
{
    for (int i = 0; i < 2; i++) {
        if (Py_IS_TYPE(self, conn_types[i])) {
            PyObject *st = FIELD(self, conn_tls[i]);
            return st != NULL && Py_IS_TYPE(st, state_type) ? st : NULL;
        }
    }
    return NULL;
}

/* tls_state(self) when everything the fast paths read is as they expect:
 * `fast` set, state OPEN.  NULL otherwise (not an error). */
static PyObject *
fast_state(PyObject *self)
{
    PyObject *st = tls_state(self);
    Py_ssize_t state;
    if (st == NULL || FIELD(st, T.fast) != Py_True || field_ssize(st, T.state, &state)
            || state != 0)
        return NULL;
    return st;
}

/* 1 when the caller runs on the thread st.owner names, else 0 (never an
 * error: the reference raises the right one). */
static int
on_owner(PyObject *st)
{
    PyObject *owner = FIELD(st, T.owner);
    return owner != NULL && PyLong_CheckExact(owner) && on_owner_thread(owner);
}

/* obj.<name> as a C integer: 0, 1 when it is not a plain int, -1 with an
 * error. */
static int
int_attr(PyObject *obj, PyObject *name, Py_ssize_t *v)
{
    PyObject *x = PyObject_GetAttr(obj, name);
    if (x == NULL)
        return -1;
    int rc = 1;
    if (PyLong_CheckExact(x)) {
        *v = PyLong_AsSsize_t(x);
        rc = *v == -1 && PyErr_Occurred() ? -1 : 0;
    }
    Py_DECREF(x);
    return rc;
}

/* PlainSlots.put(data): its key, a new reference; NULL with an error. */
static PyObject *
plain_put(PyObject *plain, PyObject *data)
{
    PyObject *bufs = FIELD(plain, T.bufs), *key = FIELD(plain, T.next);
    if (bufs == NULL || !PyDict_CheckExact(bufs) || key == NULL || !PyLong_CheckExact(key))
        return PyObject_CallMethod(plain, "put", "O", data);
    Py_ssize_t k = PyLong_AsSsize_t(key);
    if (k == -1 && PyErr_Occurred())
        return NULL;
    PyObject *next = PyLong_FromSsize_t(k + 1);
    if (next == NULL)
        return NULL;
    key = Py_NewRef(key);
    field_set(plain, T.next, next);
    if (PyDict_SetItem(bufs, key, data) < 0) {
        Py_DECREF(key);
        return NULL;
    }
    return key;
}

/* PlainSlots.view: memoryview(data) when n is all of it (the reference
 * slices otherwise). */
int
plain_slots_view(PyObject *slots, PyObject *key, Py_ssize_t n, PyObject **view)
{
    if (plain_type == NULL || !Py_IS_TYPE(slots, plain_type))
        return 0;
    PyObject *bufs = FIELD(slots, T.bufs);
    if (bufs == NULL || !PyDict_CheckExact(bufs))
        return 0;
    PyObject *data = PyDict_GetItemWithError(bufs, key);      /* borrowed */
    if (data == NULL)
        return PyErr_Occurred() ? -1 : 0;       /* missing: the reference's KeyError */
    if (!PyBytes_CheckExact(data) || PyBytes_GET_SIZE(data) != n)
        return 0;
    *view = PyMemoryView_FromObject(data);
    return *view == NULL ? -1 : 1;
}

/* PlainSlots.give_back: self._bufs.pop(key, None) */
int
plain_slots_give_back(PyObject *slots, PyObject *key)
{
    if (plain_type == NULL || !Py_IS_TYPE(slots, plain_type))
        return 0;
    PyObject *bufs = FIELD(slots, T.bufs);
    if (bufs == NULL || !PyDict_CheckExact(bufs))
        return 0;
    if (PyDict_DelItem(bufs, key) == 0)
        return 1;
    if (!PyErr_ExceptionMatches(PyExc_KeyError))
        return -1;
    PyErr_Clear();
    return 1;
}

/* The rest of on_recv once the BIO was fed: one record read and handed on.
 * 0 or -1. */
static int
read_record(PyObject *self, PyObject *st)
{
    PyObject *read = Py_NewRef(FIELD(st, T.ssl_read));
    PyObject *data = PyObject_CallOneArg(read, read_size);
    Py_DECREF(read);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(want_read_exc)) {
            PyErr_Clear();              /* the rest of a record is still on its way */
            return 0;
        }
        if (!PyErr_ExceptionMatches(ssl_error_exc))
            return -1;
        PyObject *exc = fetch_exception();
        if (exc == NULL)
            return -1;
        int rc = call_method(self, s_tls_error, exc, NULL);
        Py_DECREF(exc);
        return rc;
    }
    /* One whole record, nothing behind it, nothing for the session to send:
     * straight to the plain connection.  Anything else: the reference. */
    Py_ssize_t in_pending = 1, ssl_pending = 1, out_pending = 1;
    PyObject *plain = FIELD(st, T.plain), *incoming = FIELD(st, T.incoming);
    PyObject *outgoing = FIELD(st, T.out_pending);
    int rc = 0;
    if (PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0 && plain != NULL
            && Py_IS_TYPE(plain, plain_type) && incoming != NULL && outgoing != NULL) {
        rc = int_attr(incoming, s_pending, &in_pending);
        if (rc == 0 && in_pending == 0) {
            PyObject *f = Py_NewRef(FIELD(st, T.ssl_pending));
            PyObject *p = PyObject_CallNoArgs(f);
            Py_DECREF(f);
            if (p == NULL)
                rc = -1;
            else {
                if (PyLong_CheckExact(p)) {
                    ssl_pending = PyLong_AsSsize_t(p);
                    if (ssl_pending == -1 && PyErr_Occurred())
                        rc = -1;
                }
                Py_DECREF(p);
            }
        }
        if (rc == 0 && in_pending == 0 && ssl_pending == 0)
            rc = int_attr(outgoing, s_pending, &out_pending);
    }
    if (rc < 0) {
        Py_DECREF(data);
        return -1;
    }
    if (in_pending != 0 || ssl_pending != 0 || out_pending != 0) {
        rc = call_method(self, s_decrypted, data, NULL);
        Py_DECREF(data);
        return rc;
    }
    PyObject *key = plain_put(plain, data);
    PyObject *n = PyLong_FromSsize_t(PyBytes_GET_SIZE(data));
    Py_DECREF(data);
    if (key == NULL || n == NULL) {
        Py_XDECREF(key);
        Py_XDECREF(n);
        return -1;
    }
    PyObject *args[2] = {key, n};
    PyObject *on_recv = Py_NewRef(FIELD(st, T.plain_on_recv));
    PyObject *r = PyObject_Vectorcall(on_recv, args, 2, NULL);
    Py_DECREF(on_recv);
    Py_DECREF(key);
    Py_DECREF(n);
    return call_ok(r);
}

/* _TlsLayer.on_recv */
static PyObject *
tls_on_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *st = fast_state(self);
    PyObject *session = st == NULL ? NULL : FIELD(st, T.session);
    PyObject *ring = st == NULL ? NULL : FIELD(st, T.ring);
    if (st == NULL || nargs != 2 || !PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1])
            || session == NULL || !Py_IS_TYPE(session, session_type)
            || FIELD(session, T.peer_closed) != Py_False
            || ring == NULL || !Py_IS_TYPE(ring, &RecvSlotsType)
            || FIELD(st, T.feed) == NULL || FIELD(st, T.ssl_read) == NULL
            || FIELD(st, T.ssl_pending) == NULL || FIELD(st, T.plain_on_recv) == NULL)
        return ref_call(ref_on_recv, self, args, nargs);
    unsigned long key = PyLong_AsUnsignedLong(args[0]);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if ((key == (unsigned long)-1 || n == -1) && PyErr_Occurred())
        return NULL;
    Py_INCREF(st);
    Py_INCREF(ring);
    /* st.feed(ring.view(key, n)); the slot goes back whatever happened */
    PyObject *view = slots_view_c((RecvSlotsObject *)ring, key, n);
    PyObject *feed = Py_NewRef(FIELD(st, T.feed));
    PyObject *r = view == NULL ? NULL : PyObject_CallOneArg(feed, view);
    Py_DECREF(feed);
    Py_XDECREF(view);
    PyObject *exc = r == NULL ? fetch_exception() : NULL;
    Py_XDECREF(r);
    int rc = slots_give_back_key((RecvSlotsObject *)ring, key);
    Py_DECREF(ring);
    if (exc != NULL) {
        if (rc < 0)
            PyErr_Clear();      /* the first error is the one to see */
        restore_exception(exc);
        rc = -1;
    }
    if (rc == 0) {
        if (FIELD(st, T.fast) == Py_True) {
            rc = read_record(self, st);
        } else {
            rc = call_method(self, s_pump, NULL, NULL);
        }
    }
    Py_DECREF(st);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* _TlsLayer.write */
static PyObject *
tls_write(PyObject *self, PyObject *data)
{
    PyObject *st = fast_state(self);
    Py_ssize_t cap, pending;
    if (st == NULL || !PyBytes_CheckExact(data) || !on_owner(st)
            || PyBytes_GET_SIZE(data) > encrypt_chunk || field_ssize(st, T.cap, &cap)
            || conn_pending_bytes(self, &pending) || pending + PyBytes_GET_SIZE(data) > cap
            || FIELD(st, T.ssl_write) == NULL || FIELD(st, T.out_read) == NULL
            || FIELD(st, T.plain_write) == NULL)
        return ref_call(ref_write, self, &data, 1);
    if (PyBytes_GET_SIZE(data) == 0)
        Py_RETURN_NONE;
    /* A reply, once encrypted, staged with the plain write. */
    Py_INCREF(st);
    PyObject *f = Py_NewRef(FIELD(st, T.ssl_write));
    PyObject *r = PyObject_CallOneArg(f, data);
    Py_DECREF(f);
    PyObject *cipher = NULL;
    if (r != NULL) {
        Py_DECREF(r);
        f = Py_NewRef(FIELD(st, T.out_read));
        cipher = PyObject_CallNoArgs(f);
        Py_DECREF(f);
    }
    if (cipher != NULL) {
        PyObject *write = Py_NewRef(FIELD(st, T.plain_write));
        r = PyObject_CallOneArg(write, cipher);
        Py_DECREF(write);
        if (r == NULL && PyErr_ExceptionMatches(full_exc)) {
            PyErr_Clear();              /* encrypted: it must go; it spills */
            PyObject *args[2] = {self, cipher};
            r = PyObject_VectorcallMethod(s_spill, args, 2, NULL);
        }
        Py_DECREF(cipher);
    }
    Py_DECREF(st);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* _TlsLayer.flush */
static PyObject *
tls_flush(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *st = fast_state(self);
    Py_ssize_t pending, pause_at;
    if (st == NULL || FIELD(st, T.refused) != Py_False || !on_owner(st)
            || conn_pending_bytes(self, &pending) || field_ssize(st, T.pause_at, &pause_at)
            || pending > pause_at)
        return ref_call(ref_flush, self, NULL, 0);
    if (pending && call_method(self, s_flush_nowait, NULL, NULL) < 0)
        return NULL;
    return Py_NewRef(done);
}

/* _TlsLayer.pending_write_bytes (handlers read it per request) */
static PyObject *
tls_pending_write_bytes(PyObject *self, void *Py_UNUSED(closure))
{
    PyObject *st = tls_state(self);
    Py_ssize_t base, spill, early;
    if (st == NULL || conn_pending_bytes(self, &base)
            || field_ssize(st, T.spill_bytes, &spill) || field_ssize(st, T.early_bytes, &early))
        return call_getter(ref_pending_write_bytes, self);
    return PyLong_FromSsize_t(base + spill + early);
}

static PyGetSetDef tls_getset[] = {
    {"pending_write_bytes", tls_pending_write_bytes, NULL,
     "Bytes staged or in flight (ciphertext), plus any waiting for the handshake or for "
     "room (C fast path).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef tls_methods[] = {
    {"on_recv", (PyCFunction)(void (*)(void))tls_on_recv, METH_FASTCALL,
     "Ciphertext arrived: into the BIO, the slot straight back (C fast path)."},
    {"write", (PyCFunction)tls_write, METH_O,
     "Encrypt data and stage the records (C fast path)."},
    {"flush", (PyCFunction)tls_flush, METH_NOARGS,
     "Connection.flush; records spilled for lack of room go first (C fast path)."},
    {NULL, NULL, 0, NULL},
};
static PyObject **tls_refs[] = {&ref_on_recv, &ref_write, &ref_flush};

static int
type_arg(PyObject *o, const char *what, PyTypeObject **out)
{
    if (!PyType_Check(o)) {
        PyErr_Format(PyExc_TypeError, "bind_tls: %s must be a class", what);
        return -1;
    }
    *out = (PyTypeObject *)o;
    return 0;
}

/* bind_tls(_TlsLayer, TlsConnection, TlsProtocolConnection, _TlsState,
 * TlsSession, PlainSlots, SSLWantReadError, SSLError, WriteBufferFullError,
 * READ_SIZE, ENCRYPT_CHUNK): learn the offsets and put the C methods in
 * _TlsLayer (after bind_connection: the plain connection's fields are
 * connfast.c's).  Once per process; later calls change nothing. */
static PyObject *
sp_bind_tls(PyObject *module, PyObject *args)
{
    PyObject *a[11];
    PyTypeObject *layer, *c0, *c1, *state, *session, *plain;
    if (!PyArg_UnpackTuple(args, "bind_tls", 11, 11, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5],
                           &a[6], &a[7], &a[8], &a[9], &a[10]))
        return NULL;
    if (layer_type != NULL)
        Py_RETURN_NONE;
    if (type_arg(a[0], "_TlsLayer", &layer) < 0 || type_arg(a[1], "TlsConnection", &c0) < 0
            || type_arg(a[2], "TlsProtocolConnection", &c1) < 0
            || type_arg(a[3], "_TlsState", &state) < 0 || type_arg(a[4], "TlsSession", &session) < 0
            || type_arg(a[5], "PlainSlots", &plain) < 0)
        return NULL;
    for (int i = 6; i < 9; i++) {
        if (!PyExceptionClass_Check(a[i])) {
            PyErr_SetString(PyExc_TypeError, "bind_tls: three exception classes expected");
            return NULL;
        }
    }
    if (!PyLong_CheckExact(a[9]) || !PyLong_CheckExact(a[10])) {
        PyErr_SetString(PyExc_TypeError, "bind_tls: READ_SIZE and ENCRYPT_CHUNK are ints");
        return NULL;
    }
    Py_ssize_t chunk = PyLong_AsSsize_t(a[10]);
    if (chunk == -1 && PyErr_Occurred())
        return NULL;
    const struct { PyTypeObject *tp; const char *name; Py_ssize_t *off; } specs[] = {
        {state, "state", &T.state}, {state, "session", &T.session}, {state, "fast", &T.fast},
        {state, "feed", &T.feed}, {state, "ssl_read", &T.ssl_read},
        {state, "ssl_pending", &T.ssl_pending}, {state, "incoming", &T.incoming},
        {state, "out_pending", &T.out_pending}, {state, "plain", &T.plain},
        {state, "plain_on_recv", &T.plain_on_recv}, {state, "plain_write", &T.plain_write},
        {state, "ring", &T.ring}, {state, "owner", &T.owner}, {state, "cap", &T.cap},
        {state, "ssl_write", &T.ssl_write}, {state, "out_read", &T.out_read},
        {state, "refused", &T.refused}, {state, "pause_at", &T.pause_at},
        {state, "spill_bytes", &T.spill_bytes}, {state, "early_bytes", &T.early_bytes},
        {session, "peer_closed", &T.peer_closed}, {plain, "_bufs", &T.bufs},
        {plain, "_next", &T.next},
        {c0, "_tls", &conn_tls[0]}, {c1, "_tls", &conn_tls[1]},
    };
    for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
        if (slot_offset(specs[i].tp, specs[i].name, specs[i].off) < 0)
            return NULL;
    }
    /* Object fields only, but for the counters (read as C integers). */
    Py_ssize_t *objects[] = {&T.state, &T.session, &T.fast, &T.feed, &T.ssl_read,
                             &T.ssl_pending, &T.incoming, &T.out_pending, &T.plain,
                             &T.plain_on_recv, &T.plain_write, &T.ring, &T.owner, &T.ssl_write,
                             &T.out_read, &T.refused, &T.peer_closed, &T.bufs, &T.next,
                             &conn_tls[0], &conn_tls[1]};
    for (size_t i = 0; i < sizeof(objects) / sizeof(objects[0]); i++) {
        if (*objects[i] & SSIZE_FIELD) {
            PyErr_SetString(PyExc_TypeError, "bind_tls: an object field is a counter");
            return NULL;
        }
    }
    PyObject *fin = PyObject_GetAttrString(module, "finished_coroutine");
    if (fin == NULL)
        return NULL;
    if (install_getter(layer, &tls_getset[0], &ref_pending_write_bytes) < 0) {
        Py_DECREF(fin);
        return NULL;
    }
    if (install_methods(layer, tls_methods, tls_refs, N_METHODS(tls_methods)) < 0) {
        PyObject *exc = fetch_exception();
        (void)PyObject_SetAttrString((PyObject *)layer, tls_getset[0].name,
                                     ref_pending_write_bytes);
        Py_CLEAR(ref_pending_write_bytes);
        if (exc != NULL)
            restore_exception(exc);
        Py_DECREF(fin);
        return NULL;
    }
    done = fin;
    layer_type = (PyTypeObject *)Py_NewRef((PyObject *)layer);
    conn_types[0] = (PyTypeObject *)Py_NewRef((PyObject *)c0);
    conn_types[1] = (PyTypeObject *)Py_NewRef((PyObject *)c1);
    state_type = (PyTypeObject *)Py_NewRef((PyObject *)state);
    session_type = (PyTypeObject *)Py_NewRef((PyObject *)session);
    plain_type = (PyTypeObject *)Py_NewRef((PyObject *)plain);
    want_read_exc = Py_NewRef(a[6]);
    ssl_error_exc = Py_NewRef(a[7]);
    full_exc = Py_NewRef(a[8]);
    read_size = Py_NewRef(a[9]);
    encrypt_chunk = chunk;
    Py_RETURN_NONE;
}

/* tls_reference(name): the Python method of _TlsLayer the C one replaced. */
static PyObject *
sp_tls_reference(PyObject *Py_UNUSED(module), PyObject *name)
{
    for (int i = 0; i < N_METHODS(tls_methods); i++) {
        if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(
                name, tls_methods[i].ml_name) == 0 && *tls_refs[i] != NULL)
            return Py_NewRef(*tls_refs[i]);
    }
    if (PyUnicode_Check(name) && PyUnicode_CompareWithASCIIString(name, tls_getset[0].name) == 0
            && ref_pending_write_bytes != NULL)
        return Py_NewRef(ref_pending_write_bytes);
    PyErr_Format(PyExc_KeyError, "no C method of _TlsLayer named %R (bind_tls first)", name);
    return NULL;
}

static PyMethodDef tlsfast_functions[] = {
    {"bind_tls", (PyCFunction)sp_bind_tls, METH_VARARGS,
     "bind_tls(_TlsLayer, TlsConnection, TlsProtocolConnection, _TlsState, TlsSession, "
     "PlainSlots, SSLWantReadError, SSLError, WriteBufferFullError, "
     "READ_SIZE, ENCRYPT_CHUNK): the TLS layer's on_recv, write and flush in C."},
    {"tls_reference", (PyCFunction)sp_tls_reference, METH_O,
     "tls_reference(name): the Python method of _TlsLayer the C one replaced."},
    {NULL, NULL, 0, NULL},
};

int
tlsfast_init(PyObject *module)
{
    const InternName names[] = {
        {&s_decrypted, "_decrypted"}, {&s_tls_error, "_tls_error"}, {&s_spill, "_spill"},
        {&s_flush_nowait, "flush_nowait"}, {&s_pump, "_pump"}, {&s_pending, "pending"},
    };
    if (INTERN_ALL(names) < 0)
        return -1;
    return PyModule_AddFunctions(module, tlsfast_functions);
}
