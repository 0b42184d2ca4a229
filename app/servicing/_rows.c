/* view-statement's installment rows, written in C: app/servicing/rows.py's `python_rows` and
 * `python_paid`, exactly (tests/servicing/test_rows.py holds each pair together on random input).
 *
 * Why C: a 360-installment statement spent ~330 us of the API's CPU stepping and formatting its rows in
 * Python, 60 % of the request, and each paid installment ~1 us more (bench/PROFILING.md, "Sixth look");
 * here the whole schedule takes a few microseconds. The arithmetic is app/credit/schedule.py's `steps`, on
 * 64-bit cents with a 128-bit product; anything that does not fit raises OverflowError and the caller
 * uses the Python rows instead.
 *
 * rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)
 *     -> (text, count)
 * Installments first..min(last, tenure) until the balance is repaid, each written as
 *     {"number":N,"due_date":"<due_dates[N - 1]>","amount":A,"principal":P,"interest":I,"balance_after":B
 * followed by `before` when N < split, else `after`, the rows joined by commas. Figures in cents are
 * written with two decimals. `due_dates` and the two suffixes are ASCII str; `count` is how many rows
 * were written.
 *
 * paid(paid, due_dates, on_time, late) -> (installments, payments)
 * The paid installments' rows and the payments' entries, each list's items joined by commas (see paid()).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
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

#define PUT(buffer, literal) put((buffer), (literal), (Py_ssize_t)sizeof(literal) - 1)

/* "00" to "99": two digits per division. */
static const char PAIRS[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* A due date: ISO text, 10 bytes but for years past 9999 (a fixed-size copy is a few instructions, a
 * variable one a call). Room is reserved by the caller. */
static void put_due(Buffer *buffer, const char *due, Py_ssize_t length) {
    if (length == 10) {
        memcpy(buffer->data + buffer->length, due, 10);
        buffer->length += 10;
    } else {
        put(buffer, due, length);
    }
}

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

/* How many decimal digits a non-negative whole number has. */
static int digit_count(int64_t number) {
    int count = 1;
    while (number >= 100) {
        number /= 100;
        count += 2;
    }
    return count + (number >= 10);
}

/* A non-negative whole number, its digits written in place (no copy through a scratch buffer: a row
 * has five numbers). Room is reserved by the caller (at most 20 bytes). */
static void put_number(Buffer *buffer, int64_t number) {
    int count = digit_count(number);
    digits_before(buffer->data + buffer->length + count, number);
    buffer->length += count;
}

/* A non-negative number of cents as "units.cc". Room is reserved by the caller (at most 24 bytes). */
static void put_figure(Buffer *buffer, int64_t cents) {
    put_number(buffer, cents / 100);
    char *end = buffer->data + buffer->length;
    end[0] = '.';
    memcpy(end + 1, PAIRS + 2 * (cents % 100), 2);
    buffer->length += 3;
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


/* The buffer as an ASCII str; frees the buffer. */
static PyObject *text_of(Buffer *buffer) {
    PyObject *text = PyUnicode_New(buffer->length, 127);
    if (text != NULL && buffer->length) {
        memcpy(PyUnicode_1BYTE_DATA(text), buffer->data, (size_t)buffer->length);
    }
    PyMem_Free(buffer->data);
    buffer->data = NULL;
    return text;
}

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
    /* 2 x balance x numerator + denominator below 2^63: 64-bit division, several times faster than 128 */
    const int narrow = numerator == 0 || balance <= (INT64_MAX - denominator) / 2 / numerator;
    Py_ssize_t count = 0;
    for (int64_t number = first; number <= stop && balance > 0; number++) {
        if (number < 1 || number > PyTuple_GET_SIZE(due_dates)) {
            PyErr_SetString(PyExc_IndexError, "no due date for this installment");
            goto fail;
        }
        int64_t interest;
        if (narrow) { /* the balance only falls, so the product fits in 64 bits all the way */
            interest = (2 * balance * numerator + denominator) / (2 * denominator);
        } else {
            wide_t wide = ((wide_t)2 * balance * numerator + denominator) / twice; /* half-up, exactly */
            if (wide > INT64_MAX / 4) {
                PyErr_SetString(PyExc_OverflowError, "interest is out of the accelerated range");
                goto fail;
            }
            interest = (int64_t)wide;
        }
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
        /* every constant part is shorter than 24 bytes, every figure too */
        if (reserve(&buffer, 1 + due_length + 11 * 24 + suffix_length) < 0) {
            goto fail;
        }
        if (count) {
            PUT(&buffer, ",");
        }
        PUT(&buffer, "{\"number\":");
        put_number(&buffer, number);
        PUT(&buffer, ",\"due_date\":\"");
        put_due(&buffer, due, due_length);
        PUT(&buffer, "\",\"amount\":");
        put_figure(&buffer, interest + principal);
        PUT(&buffer, ",\"principal\":");
        put_figure(&buffer, principal);
        PUT(&buffer, ",\"interest\":");
        put_figure(&buffer, interest);
        PUT(&buffer, ",\"balance_after\":");
        put_figure(&buffer, balance);
        put(&buffer, suffix, suffix_length);
        count++;
    }
    PyObject *text = text_of(&buffer);
    if (text == NULL) {
        return NULL;
    }
    return Py_BuildValue("(Nn)", text, count);
fail:
    PyMem_Free(buffer.data);
    return NULL;
}

/* A whole number from a Python int, refused (OverflowError) below 0 or beyond the accelerated range. */
static int item_int64(PyObject *tuple, Py_ssize_t index, int64_t *out) {
    return int64_argument(PyTuple_GET_ITEM(tuple, index), out, "a payment's figure");
}

/* A date as YYYY-MM-DD, as date.isoformat() writes it. Room is reserved by the caller (10 bytes). */
static void put_date(Buffer *buffer, PyObject *date) {
    char text[10];
    int year = PyDateTime_GET_YEAR(date), month = PyDateTime_GET_MONTH(date), day = PyDateTime_GET_DAY(date);
    memcpy(text, PAIRS + 2 * (year / 100), 2);
    memcpy(text + 2, PAIRS + 2 * (year % 100), 2);
    text[4] = '-';
    memcpy(text + 5, PAIRS + 2 * month, 2);
    text[7] = '-';
    memcpy(text + 8, PAIRS + 2 * day, 2);
    put(buffer, text, 10);
}

/* paid(paid, due_dates, on_time, late) -> (installments, payments): app/servicing/rows.py's
 * `python_paid`. `paid` is a list of (PaymentRecord, balance after in cents); a PaymentRecord is the tuple
 * (payment_id, installment_number, paid_on, interest_cents, principal_cents, on_time), its amount the
 * interest plus the principal. */
static PyObject *paid(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "paid() takes 4 arguments");
        return NULL;
    }
    PyObject *pairs = args[0], *due_dates = args[1];
    if (!PyList_Check(pairs) || !PyTuple_Check(due_dates)) {
        PyErr_SetString(PyExc_TypeError, "paid() takes a list and a tuple");
        return NULL;
    }
    Py_ssize_t on_time_length, late_length;
    const char *on_time = ascii(args[2], &on_time_length, "on_time");
    const char *late = on_time ? ascii(args[3], &late_length, "late") : NULL;
    if (late == NULL) {
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(pairs);
    Buffer installments = {NULL, 0, 0}, payments = {NULL, 0, 0};
    if (count && (reserve(&installments, count * 220) < 0 || reserve(&payments, count * 200) < 0)) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *pair = PyList_GET_ITEM(pairs, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(pair, 0))
            || PyTuple_GET_SIZE(PyTuple_GET_ITEM(pair, 0)) != 6) {
            PyErr_SetString(PyExc_TypeError, "paid() takes (PaymentRecord, balance after) pairs");
            goto fail;
        }
        PyObject *record = PyTuple_GET_ITEM(pair, 0);
        PyObject *date = PyTuple_GET_ITEM(record, 2), *flag = PyTuple_GET_ITEM(record, 5);
        int64_t payment_id, number, interest, principal, after;
        if (item_int64(record, 0, &payment_id) || item_int64(record, 1, &number) || item_int64(record, 3, &interest)
            || item_int64(record, 4, &principal) || item_int64(pair, 1, &after)) {
            goto fail;
        }
        int64_t amount = interest + principal; /* each below 2^61: no overflow */
        if (!PyDate_CheckExact(date) || !PyBool_Check(flag)) { /* a datetime would print differently */
            PyErr_SetString(PyExc_TypeError, "paid_on must be a date and on_time a bool");
            goto fail;
        }
        if (number < 1 || number > PyTuple_GET_SIZE(due_dates)) {
            PyErr_SetString(PyExc_IndexError, "no due date for this installment");
            goto fail;
        }
        Py_ssize_t due_length;
        const char *due = ascii(PyTuple_GET_ITEM(due_dates, number - 1), &due_length, "a due date");
        if (due == NULL) {
            goto fail;
        }
        int was_on_time = flag == Py_True;
        /* every constant part is shorter than 24 bytes, every figure and date too */
        if (reserve(&installments, 1 + due_length + 20 * 24 + on_time_length + late_length) < 0
            || reserve(&payments, 1 + 20 * 24) < 0) {
            goto fail;
        }
        if (i) {
            PUT(&installments, ",");
            PUT(&payments, ",");
        }
        PUT(&installments, "{\"number\":");
        put_number(&installments, number);
        PUT(&installments, ",\"due_date\":\"");
        put_due(&installments, due, due_length);
        PUT(&installments, "\",\"amount\":");
        put_figure(&installments, amount);
        PUT(&installments, ",\"principal\":");
        put_figure(&installments, principal);
        PUT(&installments, ",\"interest\":");
        put_figure(&installments, interest);
        PUT(&installments, ",\"balance_after\":");
        put_figure(&installments, after);
        PUT(&installments, ",\"status\":\"");
        if (was_on_time) {
            put(&installments, on_time, on_time_length);
        } else {
            put(&installments, late, late_length);
        }
        PUT(&installments, "\",\"paid_on\":\"");
        put_date(&installments, date);
        PUT(&installments, "\"}");

        PUT(&payments, "{\"payment_id\":");
        put_number(&payments, payment_id);
        PUT(&payments, ",\"paid_on\":\"");
        put_date(&payments, date);
        PUT(&payments, "\",\"amount\":");
        put_figure(&payments, amount);
        PUT(&payments, ",\"interest\":");
        put_figure(&payments, interest);
        PUT(&payments, ",\"principal\":");
        put_figure(&payments, principal);
        PUT(&payments, ",\"installment_number\":");
        put_number(&payments, number);
        if (was_on_time) {
            PUT(&payments, ",\"on_time\":true}");
        } else {
            PUT(&payments, ",\"on_time\":false}");
        }
    }
    PyObject *first = text_of(&installments);
    PyObject *second = first ? text_of(&payments) : NULL;
    if (second == NULL) {
        Py_XDECREF(first);
        PyMem_Free(payments.data);
        return NULL;
    }
    return Py_BuildValue("(NN)", first, second);
fail:
    PyMem_Free(installments.data);
    PyMem_Free(payments.data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"rows", (PyCFunction)(void (*)(void))rows, METH_FASTCALL,
     "rows(balance, numerator, denominator, emi, first, last, tenure, due_dates, split, before, after)"
     " -> (text, count): a statement's installment rows (app/servicing/rows.py)."},
    {"paid", (PyCFunction)(void (*)(void))paid, METH_FASTCALL,
     "paid(paid, due_dates, on_time, late) -> (installments, payments): a statement's paid rows"
     " (app/servicing/rows.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_rows",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__rows(void) {
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return NULL;
    }
    return PyModule_Create(&module);
}
