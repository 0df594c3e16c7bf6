/*
 * conntable.c -- the reactor's connections by id, found without an int object.
 *
 * Why: every receive and send completion carries its connection's id, and the
 * dispatcher must find the connection (its sink) from it.  With the table a
 * dict, each lookup made a Python int of the id (ids past 256 are allocated)
 * and hashed it: two of them per echoed message, about 400 instructions of the
 * 4,800 zerg's Protocol path spent per message (callgrind, E1).
 *
 * What: ConnTable, a mapping from int ids (0 <= id < 2**64) to objects, with
 * the part of dict's interface the reactor uses: t[id] = sink, t[id],
 * del t[id], get, pop, `in`, len, values, keys, iteration, clear.  The
 * dispatcher looks ids up with conntable_get() on the C integer.  Without the
 * extension, zerg._reactor uses a dict: the reference.
 *
 * How: open addressing with linear probing over a power-of-two array of
 * (id, object) pairs; an empty pair has no object.  Removal shifts the pairs
 * after it back (no tombstones), so a lookup stops at the first empty pair.
 * The array grows past three quarters full and shrinks below an eighth; an
 * empty table has none.  Three quarters, not half: a pair is 16 bytes, and
 * at half full the table cost an idle connection up to 64 bytes (52 at
 * 10,000 connections, 23 more than the dict it replaced, which C1 measured);
 * the reactor's ids are consecutive and Fibonacci hashing spreads them
 * evenly, so the probes stay short at that load.
 *
 * Order: values(), keys() and iteration give ascending ids, which for the
 * reactor's ids (numbered as connections come) is the order they came in.
 * They are snapshots: changing the table while iterating is allowed and does
 * not affect an iteration already started.
 *
 * Rules: as speedups.c.  No Python code runs while the array is inconsistent:
 * a replaced or removed object is released after the table is whole again
 * (its destructor may look at the table).
 */
#include "speedups.h"

#include <stdlib.h>

#define MIN_CAPACITY 16

typedef struct {
    unsigned long long key;
    PyObject *value;            /* NULL: the pair is empty */
} Pair;

typedef struct {
    PyObject_HEAD
    Pair *pairs;
    size_t mask;                /* capacity - 1 */
    Py_ssize_t used;
} ConnTableObject;

static PyTypeObject ConnTableType;

/* The array of an empty table: one empty pair, never written (the first
 * insertion makes a real array), so emptying a table needs no memory. */
static Pair no_pairs[1];

static inline size_t
home(unsigned long long key, size_t mask)
{
    /* Fibonacci hashing: ids are consecutive, so use the product's high bits. */
    return (size_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

/* The pair holding key, or NULL. */
static inline Pair *
find(ConnTableObject *t, unsigned long long key)
{
    size_t i = home(key, t->mask);
    for (;;) {
        Pair *p = &t->pairs[i];
        if (p->value == NULL)
            return NULL;
        if (p->key == key)
            return p;
        i = (i + 1) & t->mask;
    }
}

PyObject *
conntable_get(PyObject *table, unsigned long long key)
{
    ConnTableObject *t = (ConnTableObject *)table;
    Pair *p = find(t, key);
    return p == NULL ? NULL : p->value;
}

int
conntable_check(PyObject *o)
{
    return Py_IS_TYPE(o, &ConnTableType);
}

/* Move every pair into a new array of capacity pairs (a power of two that
 * holds them all).  0, or -1 with MemoryError (the table unchanged). */
static int
resize(ConnTableObject *t, size_t capacity)
{
    Pair *pairs = PyMem_Calloc(capacity, sizeof(Pair));
    if (pairs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t mask = capacity - 1;
    Pair *old = t->pairs;
    size_t old_capacity = t->mask + 1;
    for (size_t j = 0; j < old_capacity; j++) {
        if (old[j].value == NULL)
            continue;
        size_t i = home(old[j].key, mask);
        while (pairs[i].value != NULL)
            i = (i + 1) & mask;
        pairs[i] = old[j];
    }
    t->pairs = pairs;
    t->mask = mask;
    if (old != no_pairs)
        PyMem_Free(old);
    return 0;
}

/* The id an int key stands for: 0, 1 when it cannot be in the table (not an
 * int, or out of range), or -1 with an error other than those. */
static int
key_of(PyObject *o, unsigned long long *key)
{
    if (!PyLong_Check(o))
        return 1;
    *key = PyLong_AsUnsignedLongLong(o);
    if (*key == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    return 0;
}

/* The pair of key o, or NULL: *rc is 0 (looked up), or as key_of. */
static Pair *
find_obj(ConnTableObject *t, PyObject *o, int *rc)
{
    unsigned long long key;
    *rc = key_of(o, &key);
    return *rc == 0 ? find(t, key) : NULL;
}

static int
set_item(ConnTableObject *t, PyObject *k, PyObject *v)
{
    unsigned long long key;
    int rc = key_of(k, &key);
    if (rc != 0) {
        if (rc > 0)
            PyErr_Format(PyExc_TypeError, "ConnTable ids are ints from 0 to 2**64-1, not %R", k);
        return -1;
    }
    Pair *p = find(t, key);
    if (p != NULL) {
        PyObject *old = p->value;
        p->value = Py_NewRef(v);
        Py_DECREF(old);
        return 0;
    }
    size_t capacity = t->mask + 1;
    if ((size_t)(t->used + 1) * 4 > capacity * 3
            && resize(t, capacity < MIN_CAPACITY ? MIN_CAPACITY : capacity * 2) < 0)
        return -1;
    size_t i = home(key, t->mask);
    while (t->pairs[i].value != NULL)
        i = (i + 1) & t->mask;
    t->pairs[i].key = key;
    t->pairs[i].value = Py_NewRef(v);
    t->used++;
    return 0;
}

/* Take pair p out of the table: its object, a reference the caller owns. */
static PyObject *
take(ConnTableObject *t, Pair *p)
{
    PyObject *value = p->value;
    size_t i = (size_t)(p - t->pairs), j = i;
    for (;;) {
        j = (j + 1) & t->mask;
        if (t->pairs[j].value == NULL)
            break;
        size_t h = home(t->pairs[j].key, t->mask);
        /* The pair at j stays where it is if its home lies cyclically in (i, j]. */
        int stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (!stays) {
            t->pairs[i] = t->pairs[j];
            i = j;
        }
    }
    t->pairs[i].value = NULL;
    t->pairs[i].key = 0;
    t->used--;
    size_t capacity = t->mask + 1;
    if (capacity > MIN_CAPACITY && (size_t)t->used * 8 < capacity && resize(t, capacity / 2) < 0)
        PyErr_Clear();          /* no memory for a smaller array: keep this one */
    return value;
}

/* -------------------------------------------------------------- the type */

static PyObject *
ConnTable_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "ConnTable() takes no arguments");
        return NULL;
    }
    ConnTableObject *t = (ConnTableObject *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->pairs = no_pairs;
    return (PyObject *)t;
}

static int
ConnTable_traverse(ConnTableObject *t, visitproc visit, void *arg)
{
    for (size_t i = 0; i <= t->mask; i++)
        Py_VISIT(t->pairs[i].value);
    return 0;
}

/* Empty the table, then release the objects (their destructors find it
 * empty).  Needs no memory. */
static int
ConnTable_clear(ConnTableObject *t)
{
    Pair *old = t->pairs;
    size_t capacity = t->mask + 1;
    t->pairs = no_pairs;
    t->mask = 0;
    t->used = 0;
    if (old != no_pairs) {
        for (size_t i = 0; i < capacity; i++)
            Py_XDECREF(old[i].value);
        PyMem_Free(old);
    }
    return 0;
}

static void
ConnTable_dealloc(ConnTableObject *t)
{
    PyObject_GC_UnTrack(t);
    (void)ConnTable_clear(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static Py_ssize_t
ConnTable_length(ConnTableObject *t)
{
    return t->used;
}

static PyObject *
ConnTable_subscript(ConnTableObject *t, PyObject *k)
{
    int rc;
    Pair *p = find_obj(t, k, &rc);
    if (p != NULL)
        return Py_NewRef(p->value);
    if (rc >= 0)
        PyErr_SetObject(PyExc_KeyError, k);
    return NULL;
}

static int
ConnTable_ass_subscript(ConnTableObject *t, PyObject *k, PyObject *v)
{
    if (v != NULL)
        return set_item(t, k, v);
    int rc;
    Pair *p = find_obj(t, k, &rc);
    if (p == NULL) {
        if (rc >= 0)
            PyErr_SetObject(PyExc_KeyError, k);
        return -1;
    }
    Py_DECREF(take(t, p));
    return 0;
}

static int
ConnTable_contains(ConnTableObject *t, PyObject *k)
{
    int rc;
    Pair *p = find_obj(t, k, &rc);
    return p != NULL ? 1 : rc < 0 ? -1 : 0;
}

/* The pair of get's or pop's id argument (name: the method):
 * 0 with *pair (NULL: absent), or -1 with an error. */
static int
lookup_arg(ConnTableObject *t, const char *name, PyObject *const *args, Py_ssize_t nargs,
           Pair **pair)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_Format(PyExc_TypeError, "%s() takes 1 or 2 arguments (%zd given)", name, nargs);
        return -1;
    }
    int rc;
    *pair = find_obj(t, args[0], &rc);
    return rc < 0 ? -1 : 0;
}

/* get(id, default=None, /) */
static PyObject *
ConnTable_get(ConnTableObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    Pair *p;
    if (lookup_arg(t, "get", args, nargs, &p) < 0)
        return NULL;
    if (p != NULL)
        return Py_NewRef(p->value);
    return Py_NewRef(nargs > 1 ? args[1] : Py_None);
}

/* pop(id[, default], /) */
static PyObject *
ConnTable_pop(ConnTableObject *t, PyObject *const *args, Py_ssize_t nargs)
{
    Pair *p;
    if (lookup_arg(t, "pop", args, nargs, &p) < 0)
        return NULL;
    if (p != NULL)
        return take(t, p);
    if (nargs > 1)
        return Py_NewRef(args[1]);
    PyErr_SetObject(PyExc_KeyError, args[0]);
    return NULL;
}

static int
by_key(const void *a, const void *b)
{
    unsigned long long x = ((const Pair *)a)->key, y = ((const Pair *)b)->key;
    return (x > y) - (x < y);
}

/* A list of the ids (want_keys) or of the objects, by ascending id. */
static PyObject *
snapshot(ConnTableObject *t, int want_keys)
{
    Py_ssize_t n = t->used;
    Pair *sorted = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Pair));
    if (sorted == NULL)
        return PyErr_NoMemory();
    Py_ssize_t k = 0;
    for (size_t i = 0; i <= t->mask && k < n; i++) {
        if (t->pairs[i].value != NULL)
            sorted[k++] = t->pairs[i];
    }
    qsort(sorted, (size_t)n, sizeof(Pair), by_key);
    PyObject *list = PyList_New(n);
    for (Py_ssize_t i = 0; list != NULL && i < n; i++) {
        PyObject *o = want_keys ? PyLong_FromUnsignedLongLong(sorted[i].key)
                                : Py_NewRef(sorted[i].value);
        if (o == NULL)
            Py_CLEAR(list);
        else
            PyList_SET_ITEM(list, i, o);
    }
    PyMem_Free(sorted);
    return list;
}

static PyObject *
ConnTable_values(ConnTableObject *t, PyObject *Py_UNUSED(ignored))
{
    return snapshot(t, 0);
}

static PyObject *
ConnTable_keys(ConnTableObject *t, PyObject *Py_UNUSED(ignored))
{
    return snapshot(t, 1);
}

static PyObject *
ConnTable_iter(ConnTableObject *t)
{
    PyObject *keys = snapshot(t, 1);
    if (keys == NULL)
        return NULL;
    PyObject *it = PyObject_GetIter(keys);
    Py_DECREF(keys);
    return it;
}

static PyObject *
ConnTable_clear_method(ConnTableObject *t, PyObject *Py_UNUSED(ignored))
{
    (void)ConnTable_clear(t);
    Py_RETURN_NONE;
}

static PyObject *
ConnTable_repr(ConnTableObject *t)
{
    return PyUnicode_FromFormat("<zerg._speedups.ConnTable: %zd connections>", t->used);
}

static PyMethodDef ConnTable_methods[] = {
    {"get", (PyCFunction)(void (*)(void))ConnTable_get, METH_FASTCALL,
     "get(id, default=None, /): the object of id, or default."},
    {"pop", (PyCFunction)(void (*)(void))ConnTable_pop, METH_FASTCALL,
     "pop(id[, default], /): take id's object out; KeyError, or default, if absent."},
    {"values", (PyCFunction)ConnTable_values, METH_NOARGS,
     "values(): a list of the objects, by ascending id."},
    {"keys", (PyCFunction)ConnTable_keys, METH_NOARGS,
     "keys(): a list of the ids, ascending."},
    {"clear", (PyCFunction)ConnTable_clear_method, METH_NOARGS,
     "clear(): empty the table."},
    {NULL, NULL, 0, NULL},
};

static PyMappingMethods ConnTable_as_mapping = {
    .mp_length = (lenfunc)ConnTable_length,
    .mp_subscript = (binaryfunc)ConnTable_subscript,
    .mp_ass_subscript = (objobjargproc)ConnTable_ass_subscript,
};

static PySequenceMethods ConnTable_as_sequence = {
    .sq_contains = (objobjproc)ConnTable_contains,
};

static PyTypeObject ConnTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zerg._speedups.ConnTable",
    .tp_doc = "ConnTable(): a reactor's connections by int id, which the dispatcher "
              "reads without making an int (native/conntable.c).",
    .tp_basicsize = sizeof(ConnTableObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = ConnTable_new,
    .tp_dealloc = (destructor)ConnTable_dealloc,
    .tp_traverse = (traverseproc)ConnTable_traverse,
    .tp_clear = (inquiry)ConnTable_clear,
    .tp_repr = (reprfunc)ConnTable_repr,
    .tp_iter = (getiterfunc)ConnTable_iter,
    .tp_methods = ConnTable_methods,
    .tp_as_mapping = &ConnTable_as_mapping,
    .tp_as_sequence = &ConnTable_as_sequence,
};

int
conntable_init(PyObject *module)
{
    if (PyType_Ready(&ConnTableType) < 0)
        return -1;
    return PyModule_AddObjectRef(module, "ConnTable", (PyObject *)&ConnTableType);
}
