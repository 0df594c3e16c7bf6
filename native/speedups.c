/*
 * speedups.c -- zerg._speedups: the reactor's per-completion work in C.
 *
 * Why: profiles of every level show the Python work per completion (the
 * dispatch loop, slot accounting) as a large share of user time; the
 * kernel side is already at the C server's.  This module does that work
 * in C and calls Python only to run connection code.
 *
 * What it holds, each mirroring a pure-Python reference name for name
 * (the way CPython's _asyncio mirrors asyncio):
 *   - RecvSlots (zerg._recvslots.RecvSlots / IncrementalRecvSlots): slot
 *     accounting, batched returns, parking, relief;
 *   - Dispatcher (zerg._reactor.Reactor._dispatch): harvest and the one
 *     table of ops, routing each completion to its sink by vectorcall;
 *   - SequenceCore and SlotLease (zerg._buffers.BufferSequence's storage and
 *     lease), with the chain operations of the hot path (leased_single,
 *     single_view, drop_single, window), len/bool and the buffer protocol
 *     (the reference uses __buffer__, 3.12+); SequenceCore's reading methods
 *     (getitem, find, tobytes, ...) are in seqfast.c, the C SequenceReader
 *     in readerfast.c, and zerg.http's request-head parser, on that reader,
 *     in httpfast.c.
 * ZERG_NO_EXTENSIONS=1 selects the references; the suite runs against both.
 *
 * The ring: this module is built from the same uringshim.c as zerg._uring,
 * so it knows the zu_ring layout; Python passes the ring's address
 * (int(ffi.cast("uintptr_t", ring.ptr))) and keeps the Ring alive for as
 * long as these objects live (the reactor owns all three).
 *
 * Rules: reference counts are written out on every path; every error is
 * propagated; nothing here blocks, so the GIL is never released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stdint.h>
#include <time.h>

#include "uringshim_compat.h"
#include "uringshim.h"
#include "speedups.h"


/* ------------------------------------------------------------ RecvSlots */




/* The buffer-ring slot a key lives in (RecvSlots.slot_of). */
static inline unsigned long
slot_of_key(RecvSlotsObject *self, unsigned long key)
{
    return self->incremental ? (key & SLOT_MASK) : key;
}

static int
slots_push_return(RecvSlotsObject *self, unsigned bid)
{
    if (self->nreturns >= self->total || bid >= self->total) {
        PyErr_Format(PyExc_RuntimeError,
                     "zerg bug: slot %u given back more often than it was handed out", bid);
        return -1;
    }
    self->returns[self->nreturns++] = (unsigned short)bid;
    return 0;
}

/* The application is done with key, and no send reads its slot. */
static int
slots_release_key(RecvSlotsObject *self, unsigned long key)
{
    if (!self->incremental) {
        if (slots_push_return(self, (unsigned)key) < 0)
            return -1;
        self->out--;
        return 0;
    }
    unsigned bid = (unsigned)(key & SLOT_MASK);
    if (bid >= self->total || self->parts[bid] == 0) {
        PyErr_Format(PyExc_RuntimeError, "zerg bug: slot part %lu given back twice", key);
        return -1;
    }
    if (--self->parts[bid] == 0) {
        self->out--;
        if (self->done[bid]) {
            self->off[bid] = 0;
            self->done[bid] = 0;
            return slots_push_return(self, bid);
        }
    }
    return 0;
}

/* The application is done with key; 0 or -1 with an exception.  While a
 * send reads the slot (pin) the give-back waits for the last unpin. */
int
slots_give_back_key(RecvSlotsObject *self, unsigned long key)
{
    if (self->npinned) {
        unsigned long bid = slot_of_key(self, key);
        if (bid < self->total && self->pins[bid]) {
            self->deferred[bid]++;
            return 0;
        }
    }
    return slots_release_key(self, key);
}

/* A receive completion with a buffer: 1 and *key to deliver, 0 for nothing
 * to deliver, -1 on error. */
static int
slots_on_cqe_c(RecvSlotsObject *self, int res, unsigned flags, unsigned bid,
               unsigned long *key)
{
    if (bid >= self->total) {
        PyErr_Format(PyExc_RuntimeError, "kernel reported buffer id %u of %u", bid,
                     self->total);
        return -1;
    }
    if (!self->incremental) {
        self->out++;
        if (res > 0) {
            self->bytes_in += res;
            *key = bid;
            return 1;
        }
        if (slots_push_return(self, bid) < 0)
            return -1;
        self->out--;
        return 0;
    }
    unsigned off = self->off[bid];
    if (flags & IORING_CQE_F_BUF_MORE)
        self->shared_cqes++;
    else
        self->done[bid] = 1;
    if (res > 0) {
        self->off[bid] = off + (unsigned)res;
        if (self->parts[bid] == 0)
            self->out++;
        self->parts[bid]++;
        self->bytes_in += res;
        *key = (unsigned long)bid | ((unsigned long)off << OFFSET_SHIFT);
        return 1;
    }
    if (self->done[bid] && self->parts[bid] == 0) {
        self->off[bid] = 0;
        self->done[bid] = 0;
        return slots_push_return(self, bid) < 0 ? -1 : 0;
    }
    return 0;
}

/* slice(None, n) for recent lengths n: a message's view is view[:n] of its
 * slot's, and making the slice and its bound (then destroying them) cost
 * about a fifth of that.  Direct-mapped by n; slices are immutable, so one
 * object serves every slot of that length. */
#define UPTO_CACHE 64
static struct { Py_ssize_t n; PyObject *slice; } upto_cache[UPTO_CACHE];

static PyObject *
upto_slice(Py_ssize_t n)        /* a new reference */
{
    size_t i = (size_t)n % UPTO_CACHE;
    if (upto_cache[i].slice != NULL && upto_cache[i].n == n)
        return Py_NewRef(upto_cache[i].slice);
    PyObject *stop = PyLong_FromSsize_t(n);
    if (stop == NULL)
        return NULL;
    PyObject *upto = PySlice_New(NULL, stop, NULL);
    Py_DECREF(stop);
    if (upto == NULL)
        return NULL;
    PyObject *old = upto_cache[i].slice;
    upto_cache[i].slice = Py_NewRef(upto);
    upto_cache[i].n = n;
    Py_XDECREF(old);
    return upto;
}

/*
 * The view of n bytes received in slot `key`.  A slot's bytes start at
 * key * slot_size: recv_view[start:start + n] would make two ints (the
 * slice's bounds) besides the view on every receive, so each slot keeps a
 * memoryview of all of it (made on first use, about 200 B a slot) and a
 * receive slices that: view[:n], with a slice kept for that length
 * (upto_slice).  The per-slot views are never handed out (a
 * consumer that releases its view releases only its own).
 */
PyObject *
slots_view_c(RecvSlotsObject *self, unsigned long key, Py_ssize_t n)
{
    Py_ssize_t start;
    if (self->incremental) {
        start = (Py_ssize_t)(key & SLOT_MASK) * self->slot_size
                + (Py_ssize_t)(key >> OFFSET_SHIFT);
        return PySequence_GetSlice(self->recv_view, start, start + n);
    }
    start = (Py_ssize_t)key * self->slot_size;
    if (key >= self->total || n < 0 || n > self->slot_size)
        return PySequence_GetSlice(self->recv_view, start, start + n);
    if (self->slot_views == NULL) {
        self->slot_views = PyMem_Calloc(SLOT_VIEW_BANKS * (size_t)self->total,
                                        sizeof(PyObject *));
        if (self->slot_views == NULL)
            return PyErr_NoMemory();
    }
    for (int i = 1; i < SLOT_VIEW_BANKS; i++) {
        PyObject **spare = &self->slot_views[i * (size_t)self->total + key];
        if (*spare != NULL) {       /* a view of this slot given back unseen */
            PyObject *v = *spare;
            *spare = NULL;
            if (PyMemoryView_GET_BUFFER(v)->len == n)
                return v;
            Py_DECREF(v);
        }
    }
    PyObject *whole = self->slot_views[key];
    if (whole == NULL) {
        whole = PySequence_GetSlice(self->recv_view, start, start + self->slot_size);
        if (whole == NULL)
            return NULL;
        self->slot_views[key] = whole;
    }
    PyObject *upto = upto_slice(n);
    if (upto == NULL)
        return NULL;
    PyObject *view = PyObject_GetItem(whole, upto);
    Py_DECREF(upto);
    return view;
}

void
slots_keep_view(RecvSlotsObject *self, unsigned long key, PyObject *view)
{
    PyMemoryViewObject *mv = (PyMemoryViewObject *)view;
    PyObject *whole = !self->incremental && self->slot_views != NULL && key < self->total
                      ? self->slot_views[key] : NULL;
    if (whole != NULL && PyMemoryView_Check(view) && Py_REFCNT(view) == 1
            && mv->exports == 0 && mv->hash == -1 && mv->weakreflist == NULL
            && !(mv->flags & _Py_MEMORYVIEW_RELEASED) && mv->view.readonly
            && mv->view.ndim == 1 && mv->view.itemsize == 1 && (mv->flags & _Py_MEMORYVIEW_C)
            && mv->view.buf == PyMemoryView_GET_BUFFER(whole)->buf) {
        for (int i = 1; i < SLOT_VIEW_BANKS; i++) {
            PyObject **spare = &self->slot_views[i * (size_t)self->total + key];
            if (*spare == NULL) {
                *spare = view;
                return;
            }
        }
    }
    Py_DECREF(view);
}

static PyObject *
RecvSlots_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ring_address", "owner", "recv_view", "slot_size", "total",
                             "incremental", NULL};
    unsigned long long addr;
    PyObject *owner, *recv_view;
    Py_ssize_t slot_size;
    unsigned total;
    int incremental;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KOOnIp", kwlist, &addr, &owner, &recv_view,
                                     &slot_size, &total, &incremental))
        return NULL;
    if (addr == 0 || total == 0 || total > 65536 || slot_size <= 0) {
        PyErr_SetString(PyExc_ValueError, "RecvSlots: bad ring address, slot count or size");
        return NULL;
    }
    if (!PyMemoryView_Check(recv_view)) {
        PyErr_SetString(PyExc_TypeError, "recv_view must be a memoryview");
        return NULL;
    }
    RecvSlotsObject *self = (RecvSlotsObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ring = (zu_ring *)(uintptr_t)addr;
    self->owner = Py_NewRef(owner);
    self->recv_view = Py_NewRef(recv_view);
    self->slot_size = slot_size;
    self->total = total;
    self->incremental = incremental;
    self->returns = PyMem_Calloc(total, sizeof(unsigned short));
    self->parked = PyList_New(0);
    if (self->returns == NULL || self->parked == NULL)
        goto fail;
    if (incremental) {
        self->off = PyMem_Calloc(total, sizeof(unsigned));
        self->parts = PyMem_Calloc(total, sizeof(unsigned));
        self->done = PyMem_Calloc(total, 1);
        if (self->off == NULL || self->parts == NULL || self->done == NULL)
            goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return PyErr_Occurred() ? NULL : PyErr_NoMemory();
}

static int
RecvSlots_traverse(RecvSlotsObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->recv_view);
    Py_VISIT(self->parked);
    if (self->slot_views != NULL) {
        for (size_t i = 0; i < SLOT_VIEW_BANKS * (size_t)self->total; i++)
            Py_VISIT(self->slot_views[i]);
    }
    return 0;
}

static int
RecvSlots_clear(RecvSlotsObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->recv_view);
    Py_CLEAR(self->parked);
    if (self->slot_views != NULL) {
        for (size_t i = 0; i < SLOT_VIEW_BANKS * (size_t)self->total; i++)
            Py_CLEAR(self->slot_views[i]);
    }
    return 0;
}

static void
RecvSlots_dealloc(RecvSlotsObject *self)
{
    PyObject_GC_UnTrack(self);
    RecvSlots_clear(self);
    PyMem_Free(self->returns);
    PyMem_Free(self->off);
    PyMem_Free(self->parts);
    PyMem_Free(self->done);
    PyMem_Free(self->pins);
    PyMem_Free(self->deferred);
    PyMem_Free(self->slot_views);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
RecvSlots_on_cqe(RecvSlotsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "on_cqe(res, flags, bid)");
        return NULL;
    }
    long res = PyLong_AsLong(args[0]);
    unsigned long flags = PyLong_AsUnsignedLong(args[1]);
    unsigned long bid = PyLong_AsUnsignedLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    if (res < INT_MIN || res > INT_MAX) {
        PyErr_SetString(PyExc_OverflowError, "res out of int range");
        return NULL;
    }
    unsigned long key;
    int r = slots_on_cqe_c(self, (int)res, (unsigned)flags, (unsigned)bid, &key);
    if (r < 0)
        return NULL;
    if (r == 0)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(key);
}

static PyObject *
RecvSlots_view(RecvSlotsObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "view(key, n)");
        return NULL;
    }
    unsigned long key = PyLong_AsUnsignedLong(args[0]);
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (PyErr_Occurred())
        return NULL;
    return slots_view_c(self, key, n);
}

static PyObject *
RecvSlots_slot_of(RecvSlotsObject *self, PyObject *key)
{
    unsigned long k = PyLong_AsUnsignedLong(key);
    if (k == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromUnsignedLong(slot_of_key(self, k));
}

static PyObject *
RecvSlots_give_back(RecvSlotsObject *self, PyObject *key)
{
    unsigned long k = PyLong_AsUnsignedLong(key);
    if (k == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (slots_give_back_key(self, k) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* A send reads key's slot: its give-back waits for slots_unpin_key.  0 or -1. */
int
slots_pin_key(RecvSlotsObject *self, unsigned long key)
{
    unsigned long bid = slot_of_key(self, key);
    if (bid >= self->total) {
        PyErr_Format(PyExc_ValueError, "slot key %lu is outside the %u slots", key, self->total);
        return -1;
    }
    if (self->pins == NULL) {
        self->pins = PyMem_Calloc(self->total, sizeof(unsigned));
        self->deferred = PyMem_Calloc(self->total, sizeof(unsigned));
        if (self->pins == NULL || self->deferred == NULL) {
            PyMem_Free(self->pins);
            PyMem_Free(self->deferred);
            self->pins = self->deferred = NULL;
            PyErr_NoMemory();
            return -1;
        }
    }
    if (self->pins[bid]++ == 0)
        self->npinned++;
    return 0;
}

/* The send that read key's slot is over; deferred give-backs happen now. */
int
slots_unpin_key(RecvSlotsObject *self, unsigned long key)
{
    unsigned long bid = slot_of_key(self, key);
    if (bid >= self->total || self->pins == NULL || self->pins[bid] == 0) {
        PyErr_Format(PyExc_RuntimeError, "zerg bug: slot %lu unpinned more often than pinned",
                     bid);
        return -1;
    }
    if (--self->pins[bid])
        return 0;
    self->npinned--;
    unsigned n = self->deferred[bid];
    self->deferred[bid] = 0;
    for (unsigned i = 0; i < n; i++) {
        if (slots_release_key(self, bid) < 0)
            return -1;
    }
    return 0;
}

static PyObject *
RecvSlots_pin(RecvSlotsObject *self, PyObject *key)
{
    unsigned long k = PyLong_AsUnsignedLong(key);
    if (k == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (slots_pin_key(self, k) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
RecvSlots_unpin(RecvSlotsObject *self, PyObject *key)
{
    unsigned long k = PyLong_AsUnsignedLong(key);
    if (k == (unsigned long)-1 && PyErr_Occurred())
        return NULL;
    if (slots_unpin_key(self, k) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
RecvSlots_get_pinned(RecvSlotsObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLong(self->npinned);
}

/* The slots given back since the last flush go back to the kernel. */
static void
slots_return_now(RecvSlotsObject *self)
{
    if (self->nreturns) {
        zu_bufring_return(self->ring, self->returns, self->nreturns);
        self->nreturns = 0;
    }
}

static PyObject *
RecvSlots_flush(RecvSlotsObject *self, PyObject *Py_UNUSED(ignored))
{
    slots_return_now(self);
    if (PyList_GET_SIZE(self->parked) && self->out < (long long)self->total) {
        PyObject *parked = self->parked;
        PyObject *fresh = PyList_New(0);
        if (fresh == NULL)
            return NULL;
        self->parked = fresh;
        return parked;          /* our reference moves to the caller */
    }
    return PyList_New(0);
}

static PyObject *
RecvSlots_park(RecvSlotsObject *self, PyObject *sink)
{
    if (PyList_Append(self->parked, sink) < 0)
        return NULL;
    self->relief = 1;
    Py_RETURN_NONE;
}

static PyObject *
RecvSlots_take_relief(RecvSlotsObject *self, PyObject *Py_UNUSED(ignored))
{
    int relief = self->relief;
    self->relief = 0;
    return PyBool_FromLong(relief);
}

static PyObject *
RecvSlots_get_returns_pending(RecvSlotsObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->nreturns || PyList_GET_SIZE(self->parked));
}

static PyObject *
RecvSlots_get_in_use(RecvSlotsObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->out + self->nreturns);
}

static PyObject *
RecvSlots_get_keys_are_slots(RecvSlotsObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(!self->incremental);
}

static PyMethodDef RecvSlots_methods[] = {
    {"on_cqe", (PyCFunction)(void (*)(void))RecvSlots_on_cqe, METH_FASTCALL,
     "on_cqe(res, flags, bid) -> key | None: a receive completion with a buffer."},
    {"view", (PyCFunction)(void (*)(void))RecvSlots_view, METH_FASTCALL,
     "view(key, n) -> memoryview: the received bytes, read-only, no copy."},
    {"slot_of", (PyCFunction)RecvSlots_slot_of, METH_O, "The buffer-ring slot of a key."},
    {"give_back", (PyCFunction)RecvSlots_give_back, METH_O,
     "The application is done with key; it goes back at the next flush."},
    {"pin", (PyCFunction)RecvSlots_pin, METH_O,
     "A send reads key's memory: a give_back waits for unpin."},
    {"unpin", (PyCFunction)RecvSlots_unpin, METH_O,
     "The send that read key is over; deferred give-backs happen now."},
    {"flush", (PyCFunction)RecvSlots_flush, METH_NOARGS,
     "Return given-back slots to the kernel; the parked sinks that may re-arm."},
    {"park", (PyCFunction)RecvSlots_park, METH_O,
     "A sink's receive ended for lack of slots: report it from flush."},
    {"take_relief", (PyCFunction)RecvSlots_take_relief, METH_NOARGS,
     "True once after the ring ran dry."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef RecvSlots_members[] = {
    {"out", T_LONGLONG, offsetof(RecvSlotsObject, out), READONLY, "Slots held by the app."},
    {"bytes_in", T_LONGLONG, offsetof(RecvSlotsObject, bytes_in), READONLY, "Bytes received."},
    {"shared_cqes", T_LONGLONG, offsetof(RecvSlotsObject, shared_cqes), READONLY,
     "Receives into a slot the kernel still fills."},
    {"total", T_UINT, offsetof(RecvSlotsObject, total), READONLY, "Slots in the ring."},
    {"slot_size", T_PYSSIZET, offsetof(RecvSlotsObject, slot_size), READONLY, "Bytes a slot."},
    {"recv_view", T_OBJECT, offsetof(RecvSlotsObject, recv_view), READONLY,
     "The receive region."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef RecvSlots_getset[] = {
    {"returns_pending", (getter)RecvSlots_get_returns_pending, NULL,
     "Slots wait to go back, or parked receives wait to re-arm.", NULL},
    {"in_use", (getter)RecvSlots_get_in_use, NULL,
     "Slots held by the application or waiting to go back.", NULL},
    {"keys_are_slots", (getter)RecvSlots_get_keys_are_slots, NULL,
     "slot_of(key) == key for every key.", NULL},
    {"pinned", (getter)RecvSlots_get_pinned, NULL, "Slots a send still reads.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject RecvSlotsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.RecvSlots",
    .tp_basicsize = sizeof(RecvSlotsObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The receive slots of one reactor (C implementation of zerg._recvslots).",
    .tp_new = RecvSlots_new,
    .tp_dealloc = (destructor)RecvSlots_dealloc,
    .tp_traverse = (traverseproc)RecvSlots_traverse,
    .tp_clear = (inquiry)RecvSlots_clear,
    .tp_methods = RecvSlots_methods,
    .tp_members = RecvSlots_members,
    .tp_getset = RecvSlots_getset,
};

/* ----------------------------------------------------------- Dispatcher */

typedef struct {
    PyObject_HEAD
    zu_ring *ring;
    PyObject *owner;            /* the Ring object */
    PyObject *slots;            /* RecvSlots (C) */
    PyObject *conns;            /* ConnTable: id -> sink */
    PyObject *poll_fired;       /* callables of the reactor */
    PyObject *on_accept;
    PyObject *new_connection;
    PyObject *on_connect;       /* on_connect(key, res): an outbound connect completed */
    PyObject *failed;           /* failed(op, key, exc) */
    unsigned batch;
    unsigned char *op;
    unsigned long long *key;
    int *res;
    unsigned *flags;
    unsigned short *bid;
    unsigned long long cqes;
    PyObject **slot_keys;       /* the int of each slot key, made once (plain slots) */
    unsigned nslot_keys;
    PyObject *host;             /* bind_step: the reactor (its now, its rare paths) */
    PyObject *dirty;            /* bind_step: its list of sinks written to */
    int ext;                    /* bind_step: loop_mode "enter_ext_arg" */
} DispatcherObject;

static PyObject *str_on_recv, *str_on_recv_end, *str_on_send, *str_send_pending, *str_id;
static PyObject *str_closed, *str_now, *str_flush_returns, *str_enter_failed;

static PyObject *
Dispatcher_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"ring_address", "owner", "batch", "slots", "conns", "poll_fired",
                             "on_accept", "new_connection", "failed", "on_connect", NULL};
    unsigned long long addr;
    unsigned batch;
    PyObject *owner, *slots, *conns, *poll_fired, *on_accept, *new_connection, *failed;
    PyObject *on_connect = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KOIO!OOOOO|O", kwlist, &addr, &owner,
                                     &batch, &RecvSlotsType, &slots, &conns,
                                     &poll_fired, &on_accept, &new_connection, &failed,
                                     &on_connect))
        return NULL;
    if (!conntable_check(conns)) {
        PyErr_SetString(PyExc_TypeError, "Dispatcher: conns must be a ConnTable");
        return NULL;
    }
    if (addr == 0 || batch == 0 || batch > 65536) {
        PyErr_SetString(PyExc_ValueError, "Dispatcher: bad ring address or batch");
        return NULL;
    }
    DispatcherObject *self = (DispatcherObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ring = (zu_ring *)(uintptr_t)addr;
    self->owner = Py_NewRef(owner);
    self->slots = Py_NewRef(slots);
    self->conns = Py_NewRef(conns);
    self->poll_fired = Py_NewRef(poll_fired);
    self->on_accept = Py_NewRef(on_accept);
    self->new_connection = Py_NewRef(new_connection);
    self->on_connect = Py_NewRef(on_connect);
    self->failed = Py_NewRef(failed);
    self->batch = batch;
    self->op = PyMem_Calloc(batch, sizeof(unsigned char));
    self->key = PyMem_Calloc(batch, sizeof(unsigned long long));
    self->res = PyMem_Calloc(batch, sizeof(int));
    self->flags = PyMem_Calloc(batch, sizeof(unsigned));
    self->bid = PyMem_Calloc(batch, sizeof(unsigned short));
    if (!((RecvSlotsObject *)slots)->incremental) {
        /* Keys are slot ids: their ints are made once, not per message. */
        self->nslot_keys = ((RecvSlotsObject *)slots)->total;
        self->slot_keys = PyMem_Calloc(self->nslot_keys, sizeof(PyObject *));
        if (self->slot_keys == NULL) {
            Py_DECREF(self);
            return PyErr_NoMemory();
        }
    }
    if (!self->op || !self->key || !self->res || !self->flags || !self->bid) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static int
Dispatcher_traverse(DispatcherObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->slots);
    Py_VISIT(self->conns);
    Py_VISIT(self->poll_fired);
    Py_VISIT(self->on_accept);
    Py_VISIT(self->new_connection);
    Py_VISIT(self->on_connect);
    Py_VISIT(self->failed);
    Py_VISIT(self->host);
    Py_VISIT(self->dirty);
    return 0;
}

static int
Dispatcher_clear(DispatcherObject *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->slots);
    Py_CLEAR(self->conns);
    Py_CLEAR(self->poll_fired);
    Py_CLEAR(self->on_accept);
    Py_CLEAR(self->new_connection);
    Py_CLEAR(self->on_connect);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->host);
    Py_CLEAR(self->dirty);
    return 0;
}

static void
Dispatcher_dealloc(DispatcherObject *self)
{
    PyObject_GC_UnTrack(self);
    Dispatcher_clear(self);
    PyMem_Free(self->op);
    PyMem_Free(self->key);
    PyMem_Free(self->res);
    PyMem_Free(self->flags);
    PyMem_Free(self->bid);
    if (self->slot_keys != NULL) {
        for (unsigned i = 0; i < self->nslot_keys; i++)
            Py_XDECREF(self->slot_keys[i]);
        PyMem_Free(self->slot_keys);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Call sink.<name>(a[, b]); a new reference or NULL. */
static PyObject *
call_method2(PyObject *sink, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {sink, a, b};
    size_t n = b == NULL ? 2 : 3;
    return PyObject_VectorcallMethod(name, args, n | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* One completion.  0, or -1 with an exception set. */
static int
dispatch_one(DispatcherObject *self, unsigned i)
{
    int op = self->op[i];
    int res = self->res[i];
    unsigned flags = self->flags[i];
    PyObject *key = NULL, *sink, *r = NULL, *pres = NULL, *pk = NULL;
    int rc = -1;

    switch (op) {
    case OP_RECV:
        sink = Py_XNewRef(conntable_get(self->conns, self->key[i]));
        if (flags & IORING_CQE_F_BUFFER) {
            unsigned long slot_key;
            int got = slots_on_cqe_c((RecvSlotsObject *)self->slots, res, flags, self->bid[i],
                                     &slot_key);
            if (got < 0)
                goto done_sink;
            if (got) {
                if (sink == NULL) {
                    if (slots_give_back_key((RecvSlotsObject *)self->slots, slot_key) < 0)
                        goto done_sink;
                } else {
                    if (slot_key < self->nslot_keys) {
                        PyObject **cached = &self->slot_keys[slot_key];
                        if (*cached == NULL)
                            *cached = PyLong_FromUnsignedLong(slot_key);
                        pk = Py_XNewRef(*cached);
                    } else {
                        pk = PyLong_FromUnsignedLong(slot_key);
                    }
                    if (pk == NULL)
                        goto done_sink;
                    if (connfast_owns(sink)) {
                        r = pc_on_recv_key(sink, pk, slot_key, res);
                    } else if ((pres = PyLong_FromLong(res)) == NULL) {
                        goto done_sink;
                    } else {
                        PyObject *a[2] = {pk, pres};
                        r = connfast_owns_base(sink) ? c_on_recv(sink, a, 2)
                                                     : call_method2(sink, str_on_recv, pk, pres);
                    }
                    if (r == NULL)
                        goto done_sink;
                    Py_CLEAR(r);
                }
            }
        }
        if (!(flags & IORING_CQE_F_MORE) && sink != NULL) {
            if (pres == NULL && (pres = PyLong_FromLong(res)) == NULL)
                goto done_sink;
            r = call_method2(sink, str_on_recv_end, pres, NULL);
            if (r == NULL)
                goto done_sink;
            Py_CLEAR(r);
        }
        rc = 0;
    done_sink:
        Py_XDECREF(sink);
        goto done;
    case OP_SEND:
        sink = conntable_get(self->conns, self->key[i]);
        if (sink == NULL) {
            rc = 0;
            goto done;
        }
        Py_INCREF(sink);
        if (connfast_owns(sink)) {
            r = pc_on_send_res(sink, res);
        } else if (connfast_owns_base(sink)) {
            r = c_on_send_res(sink, res);
        } else {
            pres = PyLong_FromLong(res);
            if (pres != NULL)
                r = call_method2(sink, str_on_send, pres, NULL);
        }
        Py_DECREF(sink);
        rc = r == NULL ? -1 : 0;
        goto done;
    case OP_POLL:
        key = PyLong_FromUnsignedLongLong(self->key[i]);
        pres = PyLong_FromLong(res);
        if (key == NULL || pres == NULL)
            goto done;
        r = PyObject_CallFunctionObjArgs(self->poll_fired, key, pres, NULL);
        rc = r == NULL ? -1 : 0;
        goto done;
    case OP_ACCEPT:
        r = PyObject_CallFunction(self->on_accept, "iI", res, flags);
        rc = r == NULL ? -1 : 0;
        goto done;
    case OP_MSG:
        if (res < 0)
            return 0;
        r = PyObject_CallFunction(self->new_connection, "i", res);
        rc = r == NULL ? -1 : 0;
        goto done;
    case OP_CONNECT:
        if (self->on_connect == Py_None)
            return 0;
        r = PyObject_CallFunction(self->on_connect, "Ki", self->key[i], res);
        rc = r == NULL ? -1 : 0;
        goto done;
    default:                    /* OP_CANCEL, OP_POLL_REMOVE: nothing to do */
        return 0;
    }
done:
    Py_XDECREF(r);
    Py_XDECREF(pres);
    Py_XDECREF(pk);
    Py_XDECREF(key);
    return rc;
}

int
intern_names(const InternName *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *names[i].slot = PyUnicode_InternFromString(names[i].s);
        if (*names[i].slot == NULL)
            return -1;
    }
    return 0;
}

/* A completion's handler raised.  An Exception goes to failed(op, key, exc)
 * and the loop goes on (as the Python reference's `except Exception`);
 * anything else (KeyboardInterrupt, SystemExit) propagates: -1. */
PyObject *
fetch_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL && exc != NULL)
        PyException_SetTraceback(exc, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return exc;
#endif
}

void
restore_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* The Exception being raised while handling op goes to failed(op, key, exc),
 * key being sink.id (sink given) or the completion's key: 0.  -1 with the
 * error for anything that is not an Exception, or when reporting fails. */
static int
report_failure(DispatcherObject *self, int op, PyObject *sink, unsigned long long key)
{
    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyObject *exc = fetch_exception();
    if (exc == NULL)
        return -1;
    PyObject *k = sink != NULL ? PyObject_GetAttr(sink, str_id)
                               : PyLong_FromUnsignedLongLong(key);
    PyObject *r = k == NULL ? NULL : PyObject_CallFunction(self->failed, "iOO", op, k, exc);
    Py_XDECREF(k);
    Py_DECREF(exc);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *
Dispatcher_run(DispatcherObject *self, PyObject *Py_UNUSED(ignored))
{
    unsigned long long total = 0;
    int prev = wake_inline_begin();       /* a woken read's task may run in place */
    for (;;) {
        unsigned n = zu_harvest(self->ring, self->batch, self->op, self->key, self->res,
                                self->flags, self->bid);
        if (n == 0)
            break;
        self->cqes += n;
        total += n;
        for (unsigned i = 0; i < n; i++) {
            if (dispatch_one(self, i) < 0
                    && report_failure(self, self->op[i], NULL, self->key[i]) < 0) {
                wake_inline_end(prev);
                return NULL;
            }
        }
        if (n < self->batch)
            break;
    }
    wake_inline_end(prev);
    return PyLong_FromUnsignedLongLong(total);
}

/* send_dirty(dirty): sink.send_pending() for every sink in the list (sinks
 * added meanwhile included), then the list emptied, as Reactor._on_select's
 * loop; a sink that raises goes to failed(OP_SEND, sink.id, exc) and the
 * others still send.  ProtocolConnection's send_pending is called directly. */
static PyObject *
Dispatcher_send_dirty(DispatcherObject *self, PyObject *dirty)
{
    if (!PyList_CheckExact(dirty)) {
        PyErr_SetString(PyExc_TypeError, "send_dirty: a list of sinks");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dirty); i++) {
        PyObject *sink = Py_NewRef(PyList_GET_ITEM(dirty, i));
        PyObject *r = connfast_owns(sink) ? pc_send_pending(sink, NULL)
                                          : PyObject_CallMethodNoArgs(sink, str_send_pending);
        int rc = r != NULL ? 0 : report_failure(self, OP_SEND, sink, 0);
        Py_XDECREF(r);
        Py_DECREF(sink);
        if (rc < 0)
            return NULL;
    }
    if (list_drop_front(dirty, PyList_GET_SIZE(dirty)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* bind_step(host, dirty, ext): what step() needs of the reactor. */
static PyObject *
Dispatcher_bind_step(DispatcherObject *self, PyObject *args)
{
    PyObject *host, *dirty;
    int ext;
    if (!PyArg_ParseTuple(args, "OO!p", &host, &PyList_Type, &dirty, &ext))
        return NULL;
    Py_XSETREF(self->host, Py_NewRef(host));
    Py_XSETREF(self->dirty, Py_NewRef(dirty));
    self->ext = ext;
    Py_RETURN_NONE;
}

/* step(timeout_ns): one loop iteration's I/O, Reactor._on_select in C (the
 * selector calls it from select()): the sends of the sinks written to, the
 * slots given back, one submit-and-wait without the GIL, the reactor's `now`,
 * then the dispatch.  A ring that ran dry, or receives parked for want of
 * slots, take the reactor's _flush_returns. */
static PyObject *
Dispatcher_step(DispatcherObject *self, PyObject *arg)
{
    long long ns = PyLong_AsLongLong(arg);
    if (ns == -1 && PyErr_Occurred())
        return NULL;
    if (self->host == NULL || self->dirty == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Dispatcher.step: bind_step() first");
        return NULL;
    }
    PyObject *r;
    if (PyList_GET_SIZE(self->dirty)) {
        r = Dispatcher_send_dirty(self, self->dirty);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    RecvSlotsObject *slots = (RecvSlotsObject *)self->slots;
    if (slots->relief || PyList_GET_SIZE(slots->parked)) {
        r = PyObject_CallMethodNoArgs(self->host, str_flush_returns);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    } else {
        slots_return_now(slots);
    }
    r = PyObject_GetAttr(self->owner, str_closed);
    if (r == NULL)
        return NULL;
    int closed = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (closed)
        return closed < 0 ? NULL : Py_NewRef(Py_None);
    int ret;
    unsigned min_complete = ns ? 1 : 0;
    Py_BEGIN_ALLOW_THREADS
    ret = self->ext ? zu_enter_ext(self->ring, min_complete, ns)
                    : zu_submit_and_wait(self->ring, min_complete, ns);
    Py_END_ALLOW_THREADS
    if (ret < 0) {              /* a real error: the shim maps the harmless ones to 0 */
        PyObject *code = PyLong_FromLong(ret);
        if (code == NULL)
            return NULL;
        r = PyObject_CallMethodOneArg(self->host, str_enter_failed, code);
        Py_DECREF(code);
        if (r == NULL)
            return NULL;
        Py_DECREF(r);
    }
    struct timespec ts;         /* time.monotonic()'s clock */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    PyObject *now = PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    if (now == NULL)
        return NULL;
    int rc = PyObject_SetAttr(self->host, str_now, now);
    Py_DECREF(now);
    if (rc < 0)
        return NULL;
    r = Dispatcher_run(self, NULL);
    if (r == NULL)
        return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyMethodDef Dispatcher_methods[] = {
    {"run", (PyCFunction)Dispatcher_run, METH_NOARGS,
     "Harvest and dispatch every completion; returns how many."},
    {"bind_step", (PyCFunction)Dispatcher_bind_step, METH_VARARGS,
     "bind_step(reactor, dirty, ext): the reactor step() works for, its list of sinks "
     "written to, and whether it waits with zu_enter_ext."},
    {"step", (PyCFunction)Dispatcher_step, METH_O,
     "step(timeout_ns): one loop iteration's I/O (Reactor._on_select)."},
    {"send_dirty", (PyCFunction)Dispatcher_send_dirty, METH_O,
     "send_pending() of every sink in the list, which is then emptied."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Dispatcher_members[] = {
    {"cqes", T_ULONGLONG, offsetof(DispatcherObject, cqes), READONLY,
     "Completions dispatched."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject DispatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.Dispatcher",
    .tp_basicsize = sizeof(DispatcherObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Harvest + the dispatch table of one reactor (C implementation).",
    .tp_new = Dispatcher_new,
    .tp_dealloc = (destructor)Dispatcher_dealloc,
    .tp_traverse = (traverseproc)Dispatcher_traverse,
    .tp_clear = (inquiry)Dispatcher_clear,
    .tp_methods = Dispatcher_methods,
    .tp_members = Dispatcher_members,
};

/* ------------------------------------------------- BufferSequence core */

/*
 * The storage of zerg.BufferSequence (zerg/_buffers.py) and the hot chain
 * operations on it.  The Python class derives from SequenceCore: its fields
 * (_segs, _offs, _start, _stop, _slots, _owns) live in this struct, so the
 * module's Python functions and these C ones work on the same objects; C
 * carries what runs per message (len/bool, the one-slot owning sequence of
 * the Protocol path, its cheap release, single-segment views, windows) and
 * the buffer protocol.  SlotLease is the lease record of an owning sequence.
 *
 * The buffer protocol exports a *copy* (self.tobytes()): a view straight
 * into a receive slot would outlive advance()/release() unchecked, and the
 * sequence's promise is a loud error on use after release.  tobytes() does
 * that check, so a dead sequence raises ValueError here too.
 */
static PyObject *str_tobytes;
static PyObject *str_dead_message;
static PyObject *str_held_from;
static PyObject *str_next;
PyTypeObject *seq_type = NULL;      /* zerg.BufferSequence (bound by bind_sequence) */
PyObject *empty_view = NULL;        /* the shared empty memoryview of _buffers */

/*
 * Every field is an object reference (ints as int objects), exposed as a
 * T_OBJECT_EX member: that is the one kind of member CPython's attribute
 * specialization (LOAD_ATTR_SLOT / STORE_ATTR_SLOT) handles, so the Python
 * methods of the class read and write them as fast as __slots__ fields.
 */


PyObject *int_released = NULL;      /* sys.maxsize: held_from once all went back */

/* The window of a sequence; -1 with an error if it was never set up. */
int
seq_bounds(SeqObject *self, Py_ssize_t *a, Py_ssize_t *b)
{
    if (self->segs == NULL) {
        PyErr_SetString(PyExc_ValueError, "BufferSequence not initialized");
        return -1;
    }
    *a = self->start;
    *b = self->stop;
    return 0;
}


static int
Seq_traverse(SeqObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->segs);
    Py_VISIT(self->offs);
    Py_VISIT(self->slots);
    /* Not Py_TYPE(self): a heap subclass's subtype_traverse visits it. */
    return 0;
}

static int
Seq_clear(SeqObject *self)
{
    Py_CLEAR(self->segs);
    Py_CLEAR(self->offs);
    Py_CLEAR(self->slots);
    Py_CLEAR(self->owns);
    return 0;
}

/* The freelist of sequences (new_seq, below). */
#define SEQ_FREELIST 64
static SeqObject *seq_free[SEQ_FREELIST];
static int seq_nfree;
static int seq_pooled;          /* seq_type may use seq_free */
static int seq_type_poolable(PyTypeObject *tp);

static void
Seq_dealloc(SeqObject *self)
{
    /* A heap subclass's instances come through subtype_dealloc, which drops
     * the reference to their type after this returns. */
    PyObject_GC_UnTrack(self);
    small_list_drop(&self->segs);
    small_list_drop(&self->offs);
    Seq_clear(self);
    if (Py_TYPE(self) == seq_type && seq_pooled && seq_nfree < SEQ_FREELIST) {
        seq_free[seq_nfree++] = self;
        return;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Seq_length(SeqObject *self)
{
    Py_ssize_t a, b;
    if (seq_bounds(self, &a, &b) < 0)
        return -1;
    return b - a;
}

static int
Seq_bool(SeqObject *self)
{
    Py_ssize_t a, b;
    if (seq_bounds(self, &a, &b) < 0)
        return -1;
    return b > a;
}

static int
Seq_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    if (flags & PyBUF_WRITABLE) {
        PyErr_SetString(PyExc_BufferError, "BufferSequence is read-only");
        view->obj = NULL;
        return -1;
    }
    PyObject *copy = PyObject_CallMethodNoArgs(self, str_tobytes);
    if (copy == NULL) {
        view->obj = NULL;
        return -1;
    }
    /* The bytes object owns the memory; the view keeps it alive (obj). */
    int rc = PyObject_GetBuffer(copy, view, flags);
    Py_DECREF(copy);
    return rc;
}

static PyBufferProcs Seq_as_buffer = {
    .bf_getbuffer = Seq_getbuffer,
    .bf_releasebuffer = NULL,
};

static PySequenceMethods Seq_as_sequence = {
    .sq_length = (lenfunc)Seq_length,
    .sq_contains = seqfast_contains,
};

static PyMappingMethods Seq_as_mapping = {
    .mp_subscript = seqfast_subscript,
};

static PyNumberMethods Seq_as_number = {
    .nb_bool = (inquiry)Seq_bool,
};

static PyMemberDef Seq_members[] = {
    {"_segs", T_OBJECT_EX, offsetof(SeqObject, segs), 0, "The chain's segments."},
    {"_offs", T_OBJECT_EX, offsetof(SeqObject, offs), 0, "Where each segment starts."},
    {"_start", T_PYSSIZET, offsetof(SeqObject, start), 0, "Window start (chain offset)."},
    {"_stop", T_PYSSIZET, offsetof(SeqObject, stop), 0, "Window end (chain offset)."},
    {"_slots", T_OBJECT_EX, offsetof(SeqObject, slots), 0, "The lease, or None."},
    {"_owns", T_OBJECT_EX, offsetof(SeqObject, owns), 0, "True for the owning sequence."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject SequenceCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.SequenceCore",
    .tp_basicsize = sizeof(SeqObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Storage, len/bool, the buffer protocol and the reading methods (seqfast.c) "
              "of zerg.BufferSequence.",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Seq_dealloc,
    .tp_traverse = (traverseproc)Seq_traverse,
    .tp_clear = (inquiry)Seq_clear,
    .tp_members = Seq_members,
    .tp_methods = seqfast_methods,
    .tp_getset = seqfast_getset,
    .tp_as_buffer = &Seq_as_buffer,
    .tp_as_sequence = &Seq_as_sequence,
    .tp_as_mapping = &Seq_as_mapping,
    .tp_as_number = &Seq_as_number,
};

/* -- SlotLease */

static int
Lease_traverse(LeaseObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keys);
    Py_VISIT(self->give_back);
    return 0;
}

static int
Lease_clear(LeaseObject *self)
{
    Py_CLEAR(self->keys);
    Py_CLEAR(self->give_back);
    return 0;
}

/* ------------------------------------------------ small lists, recycled
 *
 * Why: a level-2 or level-3 read of one segment makes three lists -- the
 * sequence's segments and offsets, the lease's keys: 1, 2 and 1 items --
 * and drops them a read later.  CPython's list freelist keeps a list object
 * but frees its item storage, so each was two allocations and two frees
 * per message.  A list of 1 or 2 items that a sequence or lease drops in
 * its dealloc while nothing else refers to it keeps its storage here, its
 * items set to None, for the next read.  Only from dealloc: a list dropped
 * by tp_clear may be part of the garbage the collector is clearing.  A
 * pooled list is checked again when taken (still ours alone, still its
 * size): code that ran while its items were dropped could have found it
 * (gc.get_objects), and then it is simply let go. */
#define SMALL_LIST_POOL 64

static PyObject *small_pool[3][SMALL_LIST_POOL];
static int small_count[3];

PyObject *
small_list(Py_ssize_t n)
{
    if (n >= 1 && n <= 2) {
        while (small_count[n] > 0) {
            PyObject *l = small_pool[n][--small_count[n]];
            if (Py_REFCNT(l) == 1 && PyList_GET_SIZE(l) == n)
                return l;
            Py_DECREF(l);
        }
    }
    PyObject *l = PyList_New(n);
    if (l != NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            PyList_SET_ITEM(l, i, Py_NewRef(Py_None));
    }
    return l;
}

void
small_list_drop(PyObject **slot)
{
    PyObject *l = *slot;
    if (l == NULL)
        return;
    *slot = NULL;
    Py_ssize_t n = PyList_CheckExact(l) ? PyList_GET_SIZE(l) : 0;
    if (Py_REFCNT(l) == 1 && n >= 1 && n <= 2 && ((PyListObject *)l)->allocated == n
            && small_count[n] < SMALL_LIST_POOL) {
        for (Py_ssize_t i = 0; i < n; i++)     /* (may run code: see above) */
            Py_SETREF(((PyListObject *)l)->ob_item[i], Py_NewRef(Py_None));
        if (Py_REFCNT(l) == 1 && PyList_GET_SIZE(l) == n && small_count[n] < SMALL_LIST_POOL) {
            small_pool[n][small_count[n]++] = l;
            return;
        }
    }
    Py_DECREF(l);
}

/* Leases of SlotLease itself (not a base type) keep their memory for the
 * next read's lease, as CPython's own freelists do: one per level-2/3 read
 * otherwise went through the allocator twice. */
#define LEASE_FREELIST 64
static LeaseObject *lease_free[LEASE_FREELIST];
static int lease_nfree;

static LeaseObject *
lease_alloc(void)
{
    if (lease_nfree > 0) {
        LeaseObject *self = lease_free[--lease_nfree];
        PyObject_Init((PyObject *)self, &SlotLeaseType);
        self->keys = self->give_back = NULL;
        self->next = self->held_from = 0;
        PyObject_GC_Track(self);
        return self;
    }
    return (LeaseObject *)SlotLeaseType.tp_alloc(&SlotLeaseType, 0);
}

static void
Lease_dealloc(LeaseObject *self)
{
    PyObject_GC_UnTrack(self);
    small_list_drop(&self->keys);
    Lease_clear(self);
    if (Py_IS_TYPE(self, &SlotLeaseType) && lease_nfree < LEASE_FREELIST) {
        lease_free[lease_nfree++] = self;
        return;
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Lease_init(LeaseObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"keys", "give_back", NULL};
    PyObject *keys, *give_back;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:SlotLease", kwlist, &keys, &give_back))
        return -1;
    Py_XSETREF(self->keys, Py_NewRef(keys));
    Py_XSETREF(self->give_back, Py_NewRef(give_back));
    self->next = 0;
    self->held_from = 0;
    return 0;
}

static PyMemberDef Lease_members[] = {
    {"keys", T_OBJECT_EX, offsetof(LeaseObject, keys), 0, "Where each segment lives."},
    {"give_back", T_OBJECT_EX, offsetof(LeaseObject, give_back), 0, "Returns keys."},
    {"next", T_PYSSIZET, offsetof(LeaseObject, next), 0, "First segment still held."},
    {"held_from", T_PYSSIZET, offsetof(LeaseObject, held_from), 0,
     "Chain offset where the held segments start."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject SlotLeaseType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.SlotLease",
    .tp_basicsize = sizeof(LeaseObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The lease record of an owning BufferSequence (zerg._buffers.SlotLease).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lease_init,
    .tp_dealloc = (destructor)Lease_dealloc,
    .tp_traverse = (traverseproc)Lease_traverse,
    .tp_clear = (inquiry)Lease_clear,
    .tp_members = Lease_members,
};

/* -- the chain operations of the hot path */

static int
check_seq(PyObject *obj)
{
    if (seq_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_sequence() was not called");
        return -1;
    }
    if (!PyObject_TypeCheck(obj, &SequenceCoreType)) {
        PyErr_Format(PyExc_TypeError, "expected a BufferSequence, got %.100s",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    return 0;
}

/* lease.held_from, for the C lease or any object with that attribute. */
static int
held_from_of(PyObject *slots, Py_ssize_t *out)
{
    if (Py_IS_TYPE(slots, &SlotLeaseType)) {
        *out = ((LeaseObject *)slots)->held_from;
        return 0;
    }
    PyObject *v = PyObject_GetAttr(slots, str_held_from);
    if (v == NULL)
        return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* 0 if the window's bytes are still held, else -1 with ValueError set. */
int
seq_check_alive(SeqObject *self)
{
    PyObject *slots = self->slots;
    if (slots == NULL || slots == Py_None)
        return 0;
    Py_ssize_t held_from, start, stop;
    if (held_from_of(slots, &held_from) < 0 || seq_bounds(self, &start, &stop) < 0)
        return -1;
    if (start >= held_from)
        return 0;
    PyObject *msg = PyObject_CallMethodOneArg((PyObject *)self, str_dead_message, slots);
    if (msg != NULL) {
        PyErr_SetObject(PyExc_ValueError, msg);
        Py_DECREF(msg);
    }
    return -1;
}

static PyObject *
sp_bind_sequence(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *tp, *empty;
    if (!PyArg_ParseTuple(args, "O!O!:bind_sequence", &PyType_Type, &tp,
                          &PyMemoryView_Type, &empty))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)tp, &SequenceCoreType)) {
        PyErr_SetString(PyExc_TypeError, "bind_sequence: not a SequenceCore subclass");
        return NULL;
    }
    Py_XSETREF(seq_type, (PyTypeObject *)Py_NewRef(tp));
    while (seq_nfree > 0)       /* (another class's memory) */
        PyObject_GC_Del(seq_free[--seq_nfree]);
    seq_pooled = seq_type_poolable(seq_type);
    Py_XSETREF(empty_view, Py_NewRef(empty));
    /* the reading methods in C, the Python ones kept (seqfast.c) */
    if (seqfast_bind((PyTypeObject *)tp) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Sequences of the bound class itself keep their memory for the next one
 * (speedups.h: seq_alloc).  The class is a heap type: subtype_dealloc
 * calls Seq_dealloc and then drops the instance's reference to the class,
 * which PyObject_Init takes again on reuse.  Only for a class that adds
 * nothing subtype_dealloc would have to undo on the reused memory (no
 * __dict__, __weakref__, slots or finalizer: BufferSequence's __slots__ is
 * empty with the extension), checked when it is bound. */

static int
seq_type_poolable(PyTypeObject *tp)
{
    return tp->tp_basicsize == (Py_ssize_t)sizeof(SeqObject) && tp->tp_itemsize == 0
        && tp->tp_dictoffset == 0 && tp->tp_weaklistoffset == 0 && tp->tp_finalize == NULL
        && tp->tp_del == NULL && (tp->tp_flags & Py_TPFLAGS_HAVE_GC)
#ifdef Py_TPFLAGS_MANAGED_DICT
        && !(tp->tp_flags & Py_TPFLAGS_MANAGED_DICT)
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
        && !(tp->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF)
#endif
        ;
}

static SeqObject *
new_seq(PyTypeObject *tp)
{
    if (tp == seq_type && seq_pooled && seq_nfree > 0) {
        SeqObject *self = seq_free[--seq_nfree];
        PyObject_Init((PyObject *)self, tp);
        self->segs = self->offs = self->slots = self->owns = NULL;
        self->start = self->stop = 0;
        PyObject_GC_Track(self);
        return self;
    }
    return (SeqObject *)tp->tp_alloc(tp, 0);
}

SeqObject *
seq_alloc(void)
{
    return new_seq(seq_type);
}

int
seq_new_owning(PyObject *segs, PyObject *offs, PyObject *keys, PyObject *give_back,
               SeqObject **seq_out, LeaseObject **lease_out)
{
    if (seq_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "bind_sequence() was not called");
        return -1;
    }
    Py_ssize_t nsegs = PyList_GET_SIZE(segs);
    Py_ssize_t total = PyLong_AsSsize_t(PyList_GET_ITEM(offs, nsegs));
    if (total == -1 && PyErr_Occurred())
        return -1;
    LeaseObject *lease = lease_alloc();
    SeqObject *seq = new_seq(seq_type);
    if (lease == NULL || seq == NULL) {
        Py_XDECREF(lease);
        Py_XDECREF(seq);
        return -1;
    }
    lease->keys = Py_NewRef(keys);
    lease->give_back = Py_NewRef(give_back);
    lease->next = 0;
    lease->held_from = 0;
    seq->segs = Py_NewRef(segs);
    seq->offs = Py_NewRef(offs);
    seq->start = 0;
    seq->stop = total;
    seq->slots = Py_NewRef((PyObject *)lease);
    seq->owns = Py_NewRef(Py_True);
    *seq_out = seq;
    *lease_out = lease;
    return 0;
}

/* The owning sequence of one receive slot and its lease (view: read-only,
 * format 'B', 1-D): 0 and two new references, or -1 with an exception. */
int
seq_make_single(PyObject *view, PyObject *key, PyObject *give_back, SeqObject **seq_out,
                LeaseObject **lease_out)
{
    Py_ssize_t n = PyObject_Length(view);
    if (n < 0)
        return -1;
    PyObject *segs = small_list(1), *offs = small_list(2), *keys = small_list(1);
    PyObject *zero = PyLong_FromSsize_t(0), *end = PyLong_FromSsize_t(n);
    int rc = -1;
    if (segs != NULL && offs != NULL && keys != NULL && zero != NULL && end != NULL) {
        list_put(segs, 0, Py_NewRef(view));
        list_put(offs, 0, Py_NewRef(zero));
        list_put(offs, 1, Py_NewRef(end));
        list_put(keys, 0, Py_NewRef(key));
        rc = seq_new_owning(segs, offs, keys, give_back, seq_out, lease_out);
    }
    Py_XDECREF(segs);
    Py_XDECREF(offs);
    Py_XDECREF(keys);
    Py_XDECREF(zero);
    Py_XDECREF(end);
    return rc;
}

/* leased_single(view, key, give_back) -> (seq, lease). */
static PyObject *
sp_leased_single(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "leased_single(view, key, give_back)");
        return NULL;
    }
    SeqObject *seq;
    LeaseObject *lease;
    if (seq_make_single(args[0], args[1], args[2], &seq, &lease) < 0)
        return NULL;
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(seq);
        Py_DECREF(lease);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, (PyObject *)seq);
    PyTuple_SET_ITEM(pair, 1, (PyObject *)lease);
    return pair;
}

/* single_view(seq) -> memoryview | None: the bytes as one checked view when
 * the chain has one segment. */
static PyObject *
sp_single_view(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (check_seq(arg) < 0)
        return NULL;
    SeqObject *self = (SeqObject *)arg;
    if (self->segs == NULL || !PyList_Check(self->segs) || PyList_GET_SIZE(self->segs) != 1)
        Py_RETURN_NONE;
    Py_ssize_t start, stop;
    if (seq_check_alive(self) < 0 || seq_bounds(self, &start, &stop) < 0)
        return NULL;
    PyObject *seg = PyList_GET_ITEM(self->segs, 0);
    Py_ssize_t len = PyObject_Length(seg);
    if (len < 0)
        return NULL;
    if (start == 0 && stop == len)
        return Py_NewRef(seg);
    return PySequence_GetSlice(seg, start, stop);
}

/* Mark a one-segment owning sequence released without giving its slot
 * back (the caller does): 0, or -1 with an exception. */
int
seq_drop_single(SeqObject *self)
{
    PyObject *slots = self->slots;
    if (slots == NULL || slots == Py_None || self->segs == NULL
            || !PyList_Check(self->segs) || PyList_GET_SIZE(self->segs) < 1) {
        PyErr_SetString(PyExc_ValueError, "drop_single: not a one-slot owning sequence");
        return -1;
    }
    if (Py_IS_TYPE(slots, &SlotLeaseType)) {
        ((LeaseObject *)slots)->next = 1;
        ((LeaseObject *)slots)->held_from = RELEASED;
    } else {
        PyObject *one = PyLong_FromLong(1);
        if (one == NULL)
            return -1;
        int rc = (PyObject_SetAttr(slots, str_next, one) == 0
                  && PyObject_SetAttr(slots, str_held_from, int_released) == 0) ? 0 : -1;
        Py_DECREF(one);
        if (rc < 0)
            return -1;
    }
    return PyList_SetItem(self->segs, 0, Py_NewRef(empty_view));
}

/* drop_single(seq). */
static PyObject *
sp_drop_single(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (check_seq(arg) < 0 || seq_drop_single((SeqObject *)arg) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyObject *
seq_window(SeqObject *src)
{
    SeqObject *view = new_seq(Py_TYPE(src));
    if (view == NULL)
        return NULL;
    view->segs = Py_XNewRef(src->segs);
    view->offs = Py_XNewRef(src->offs);
    view->start = src->start;
    view->stop = src->stop;
    view->slots = Py_XNewRef(src->slots);
    view->owns = Py_NewRef(Py_False);
    return (PyObject *)view;
}

/* window(seq): seq[:] without the slice arithmetic (no validity check). */
static PyObject *
sp_window(PyObject *Py_UNUSED(module), PyObject *arg)
{
    if (check_seq(arg) < 0)
        return NULL;
    return seq_window((SeqObject *)arg);
}

/* ---------------------------------------------------- allocation count */

/*
 * How many objects the interpreter allocates, for benchmarks/allocations.py
 * (issue: "Python objects allocated per message").  sys.getallocatedblocks()
 * is net -- blocks allocated minus blocks freed -- so it shows leaks, not the
 * churn of a hot path that frees what it allocates.  This hook wraps the
 * object-domain allocator (PyMem_SetAllocator allows a hook that calls the
 * previous allocator at any time) and counts every new block, gross.  Off
 * unless a benchmark turns it on; the counter is only touched with the GIL
 * held (the object domain requires it).
 */
static PyMemAllocatorEx alloc_orig;
static int alloc_hooked;
static unsigned long long alloc_count;

static void *
count_malloc(void *ctx, size_t n)
{
    (void)ctx;
    alloc_count++;
    return alloc_orig.malloc(alloc_orig.ctx, n);
}

static void *
count_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    alloc_count++;
    return alloc_orig.calloc(alloc_orig.ctx, nelem, elsize);
}

static void *
count_realloc(void *ctx, void *ptr, size_t n)
{
    (void)ctx;
    if (ptr == NULL)
        alloc_count++;
    return alloc_orig.realloc(alloc_orig.ctx, ptr, n);
}

static void
count_free(void *ctx, void *ptr)
{
    (void)ctx;
    alloc_orig.free(alloc_orig.ctx, ptr);
}

/* count_allocations(): start counting (once; it stays on). */
static PyObject *
sp_count_allocations(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (!alloc_hooked) {
        PyMem_GetAllocator(PYMEM_DOMAIN_OBJ, &alloc_orig);
        PyMemAllocatorEx hook = {NULL, count_malloc, count_calloc, count_realloc, count_free};
        PyMem_SetAllocator(PYMEM_DOMAIN_OBJ, &hook);
        alloc_hooked = 1;
    }
    Py_RETURN_NONE;
}

/* allocations() -> int: blocks allocated since count_allocations(). */
static PyObject *
sp_allocations(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromUnsignedLongLong(alloc_count);
}

/* --------------------------------------------------------------- module */

static PyMethodDef speedups_methods[] = {
    {"bind_sequence", (PyCFunction)sp_bind_sequence, METH_VARARGS,
     "bind_sequence(BufferSequence, empty_view): the class the chain operations make."},
    {"leased_single", (PyCFunction)(void (*)(void))sp_leased_single, METH_FASTCALL,
     "leased_single(view, key, give_back) -> (seq, lease)."},
    {"single_view", (PyCFunction)sp_single_view, METH_O,
     "single_view(seq) -> memoryview | None."},
    {"drop_single", (PyCFunction)sp_drop_single, METH_O,
     "drop_single(seq): release a one-slot owning sequence without giving its slot back."},
    {"window", (PyCFunction)sp_window, METH_O, "window(seq): seq[:] for the hot path."},
    {"count_allocations", (PyCFunction)sp_count_allocations, METH_NOARGS,
     "count_allocations(): count every object-domain allocation from now on (benchmarks)."},
    {"allocations", (PyCFunction)sp_allocations, METH_NOARGS,
     "allocations() -> int: object-domain blocks allocated since count_allocations()."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zerg._speedups",
    .m_doc = "The reactor's per-completion work in C (see native/speedups.c).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    const InternName names[] = {
        {&str_on_recv, "on_recv"}, {&str_on_recv_end, "on_recv_end"},
        {&str_on_send, "on_send"}, {&str_tobytes, "tobytes"},
        {&str_dead_message, "_dead_message"}, {&str_held_from, "held_from"},
        {&str_next, "next"}, {&str_send_pending, "send_pending"}, {&str_id, "id"},
        {&str_closed, "closed"}, {&str_now, "now"}, {&str_flush_returns, "_flush_returns"},
        {&str_enter_failed, "_enter_failed"},
    };
    if (INTERN_ALL(names) < 0)
        return NULL;
    int_released = PyLong_FromSsize_t(PY_SSIZE_T_MAX);
    if (int_released == NULL)
        return NULL;
    if (PyType_Ready(&RecvSlotsType) < 0 || PyType_Ready(&DispatcherType) < 0
        || PyType_Ready(&SequenceCoreType) < 0 || PyType_Ready(&SlotLeaseType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
    if (connfast_init(m) < 0 || loopfast_init(m) < 0 || seqfast_init(m) < 0
            || readerfast_init(m) < 0 || httpfast_init(m) < 0 || wake_init(m) < 0
            || counters_init(m) < 0 || tlsfast_init(m) < 0 || conntable_init(m) < 0
            || selectfast_init(m) < 0 || waiter_init(m) < 0 || conntask_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RecvSlots", (PyObject *)&RecvSlotsType) < 0
        || PyModule_AddObjectRef(m, "Dispatcher", (PyObject *)&DispatcherType) < 0
        || PyModule_AddObjectRef(m, "SequenceCore", (PyObject *)&SequenceCoreType) < 0
        || PyModule_AddObjectRef(m, "SlotLease", (PyObject *)&SlotLeaseType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
