/* view-statement's installment rows, stepped and written in C: app/servicing/rows.py's `python_rows`,
 * exactly (tests/servicing/test_rows.py holds the two together on random schedules).
 *
 * Why C: a 360-installment statement spent ~330 us of the API's CPU stepping and formatting its rows in
 * Python, 60 % of the request (bench/PROFILING.md, "Sixth look"); here it is a few microseconds. The
 * arithmetic is app/credit/schedule.py's `steps`, on 64-bit cents with a 128-bit product; anything that
 * does not fit raises OverflowError and the caller uses the Python rows instead.
 *
 * rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)
 *     -> (text, count)
 * Installments first..min(last, tenure) until the balance is repaid, each written as
 *     {"number":N,"due_date":"<due_dates[N - 1]>","amount":A,"principal":P,"interest":I,"balance_after":B
 * followed by `before` when N < split, else `after`, the rows joined by commas. Figures in cents are
 * written with two decimals. `due_dates` and the two suffixes are ASCII str; `count` is how many rows
 * were written.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

__extension__ typedef __int128 wide_t; /* gcc and clang: the product of two 61-bit numbers, exactly */

typedef struct {
    char *data;
    Py_ssize_t length;
    Py_ssize_t capacity;
} Buffer;

static int reserve(Buffer *buffer, Py_ssize_t more) {
    if (buffer->length + more <= buffer->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buffer->capacity * 2;
    if (capacity < buffer->length + more) {
        capacity = buffer->length + more;
    }
    char *data = PyMem_Realloc(buffer->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

/* Room is reserved by the caller. */
static void put(Buffer *buffer, const char *text, Py_ssize_t length) {
    memcpy(buffer->data + buffer->length, text, (size_t)length);
    buffer->length += length;
}

/* "00" to "99": two digits per division. */
static const char PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* A non-negative whole number's digits, written backwards from `end`; returns where they start. */
static char *digits_before(char *end, int64_t number) {
    while (number >= 100) {
        end -= 2;
        memcpy(end, PAIRS + 2 * (number % 100), 2);
        number /= 100;
    }
    if (number >= 10) {
        end -= 2;
        memcpy(end, PAIRS + 2 * number, 2);
    } else {
        *--end = (char)('0' + number);
    }
    return end;
}

/* A non-negative whole number. Room is reserved by the caller (at most 20 bytes). */
static void put_number(Buffer *buffer, int64_t number) {
    char text[24];
    char *start = digits_before(text + sizeof(text), number);
    put(buffer, start, (Py_ssize_t)(text + sizeof(text) - start));
}

/* A non-negative number of cents as "units.cc". Room is reserved by the caller (at most 24 bytes). */
static void put_figure(Buffer *buffer, int64_t cents) {
    char text[24];
    char *end = text + sizeof(text) - 3;
    end[0] = '.';
    memcpy(end + 1, PAIRS + 2 * (cents % 100), 2);
    char *start = digits_before(end, cents / 100);
    put(buffer, start, (Py_ssize_t)(text + sizeof(text) - start));
}

static const char *ascii(PyObject *text, Py_ssize_t *length, const char *what) {
    if (!PyUnicode_Check(text) || !PyUnicode_IS_COMPACT_ASCII(text)) {
        PyErr_Format(PyExc_TypeError, "%s must be an ASCII str", what);
        return NULL;
    }
    *length = PyUnicode_GET_LENGTH(text);
    return (const char *)PyUnicode_DATA(text);
}

static int int64_argument(PyObject *value, int64_t *out, const char *name) {
    long long number = PyLong_AsLongLong(value);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (number < 0 || number > INT64_MAX / 4) {
        PyErr_Format(PyExc_OverflowError, "%s is out of the accelerated range", name);
        return -1;
    }
    *out = (int64_t)number;
    return 0;
}

static const char NUMBER[] = "{\"number\":";
static const char DUE_DATE[] = ",\"due_date\":\"";
static const char AMOUNT[] = "\",\"amount\":";
static const char PRINCIPAL[] = ",\"principal\":";
static const char INTEREST[] = ",\"interest\":";
static const char BALANCE_AFTER[] = ",\"balance_after\":";

static PyObject *rows(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 11) {
        PyErr_SetString(PyExc_TypeError, "rows() takes 11 arguments");
        return NULL;
    }
    int64_t balance, numerator, denominator, emi, first, last, tenure, split;
    if (int64_argument(args[0], &balance, "balance") || int64_argument(args[1], &numerator, "numerator")
        || int64_argument(args[2], &denominator, "denominator") || int64_argument(args[3], &emi, "emi")
        || int64_argument(args[4], &first, "first") || int64_argument(args[5], &last, "last")
        || int64_argument(args[6], &tenure, "tenure") || int64_argument(args[8], &split, "split")) {
        return NULL;
    }
    if (denominator == 0) {
        PyErr_SetString(PyExc_ZeroDivisionError, "denominator is 0");
        return NULL;
    }
    PyObject *due_dates = args[7];
    if (!PyTuple_Check(due_dates)) {
        PyErr_SetString(PyExc_TypeError, "due_dates must be a tuple");
        return NULL;
    }
    Py_ssize_t before_length, after_length;
    const char *before = ascii(args[9], &before_length, "before");
    const char *after = before ? ascii(args[10], &after_length, "after") : NULL;
    if (after == NULL) {
        return NULL;
    }
    int64_t stop = last < tenure ? last : tenure;
    Buffer buffer = {NULL, 0, 0};
    if (stop >= first && reserve(&buffer, (Py_ssize_t)(stop - first + 1) * 200) < 0) {
        return NULL;
    }
    const wide_t twice = (wide_t)2 * denominator;
    Py_ssize_t count = 0;
    for (int64_t number = first; number <= stop && balance > 0; number++) {
        if (number < 1 || number > PyTuple_GET_SIZE(due_dates)) {
            PyErr_SetString(PyExc_IndexError, "no due date for this installment");
            goto fail;
        }
        wide_t wide = ((wide_t)2 * balance * numerator + denominator) / twice; /* half-up, exactly */
        if (wide > INT64_MAX / 4) {
            PyErr_SetString(PyExc_OverflowError, "interest is out of the accelerated range");
            goto fail;
        }
        int64_t interest = (int64_t)wide;
        int64_t principal = emi > interest ? emi - interest : 0;
        if (number == tenure || principal >= balance) {
            principal = balance;
        }
        balance -= principal;
        Py_ssize_t due_length;
        const char *due = ascii(PyTuple_GET_ITEM(due_dates, number - 1), &due_length, "a due date");
        if (due == NULL) {
            goto fail;
        }
        const char *suffix = number < split ? before : after;
        Py_ssize_t suffix_length = number < split ? before_length : after_length;
        /* every constant part is shorter than BALANCE_AFTER, every figure than 24 bytes */
        if (reserve(&buffer, 1 + due_length + 5 * 24 + (Py_ssize_t)sizeof(BALANCE_AFTER) * 6
                                 + suffix_length) < 0) {
            goto fail;
        }
        if (count) {
            put(&buffer, ",", 1);
        }
        put(&buffer, NUMBER, (Py_ssize_t)sizeof(NUMBER) - 1);
        put_number(&buffer, number);
        put(&buffer, DUE_DATE, (Py_ssize_t)sizeof(DUE_DATE) - 1);
        put(&buffer, due, due_length);
        put(&buffer, AMOUNT, (Py_ssize_t)sizeof(AMOUNT) - 1);
        put_figure(&buffer, interest + principal);
        put(&buffer, PRINCIPAL, (Py_ssize_t)sizeof(PRINCIPAL) - 1);
        put_figure(&buffer, principal);
        put(&buffer, INTEREST, (Py_ssize_t)sizeof(INTEREST) - 1);
        put_figure(&buffer, interest);
        put(&buffer, BALANCE_AFTER, (Py_ssize_t)sizeof(BALANCE_AFTER) - 1);
        put_figure(&buffer, balance);
        put(&buffer, suffix, suffix_length);
        count++;
    }
    PyObject *text = PyUnicode_New(buffer.length, 127);
    if (text == NULL) {
        goto fail;
    }
    if (buffer.length) {
        memcpy(PyUnicode_1BYTE_DATA(text), buffer.data, (size_t)buffer.length);
    }
    PyMem_Free(buffer.data);
    return Py_BuildValue("(Nn)", text, count);
fail:
    PyMem_Free(buffer.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)"
     " -> (text, count): a statement's installment rows (app/servicing/rows.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rows",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rows(void) { return PyModule_Create(&module); }
