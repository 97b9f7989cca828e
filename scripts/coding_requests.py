"""Coding requests written for the learning measurement (scripts/eval_learning.py): 60 tasks,
each asked in five programming languages and a few phrasings, 300 distinct messages in all.
Written for crabbot, from no public corpus; every one is `coding` (not the cheap tier)."""

from __future__ import annotations

LANGUAGES = (
    "Python",
    "JavaScript",
    "Go",
    "Rust",
    "Java",
    "TypeScript",
    "C#",
    "Ruby",
    "Kotlin",
    "C",
)

TASKS = (
    "a function that checks whether a number is prime",
    "a function that flattens a nested list of any depth",
    "code that reads a JSON file and prints every key at the top level",
    "a function that counts how often each word appears in a text file",
    "a class for a bank account with deposit, withdraw and a balance check",
    "a function that validates a password: 8 characters, a digit and a capital",
    "a retry helper that calls a function up to three times with exponential backoff",
    "a function that converts a Roman numeral to an integer",
    "code that downloads a web page and lists all the links on it",
    "a function that merges two dictionaries, summing values of shared keys",
    "a function that rotates a square matrix by 90 degrees",
    "a simple stack with push, pop and peek, and tests for it",
    "code that walks a folder recursively and lists files bigger than 100 MB",
    "a function that parses a CSV line with quoted fields that contain commas",
    "a rate limiter that allows 10 calls a second (token bucket)",
    "a function that finds the longest common prefix of a list of strings",
    "a command line tool that renames files to lowercase with dashes",
    "a function that returns the nth Fibonacci number with memoisation",
    "code that sorts a list of people by age, then by name",
    "a function that detects a cycle in a linked list",
    "a thread-safe counter used by four worker threads",
    "a function that turns a number of seconds into '1h 02m 03s'",
    "a tiny HTTP server that answers /health with ok",
    "a function that compresses 'aaabcc' into 'a3b1c2'",
    "a breadth-first search over a grid with walls",
    "a function that checks whether two strings are anagrams",
    "code that connects to SQLite, creates a table and inserts three rows",
    "a function that splits a list into chunks of n items",
    "a binary tree with insert and in-order traversal",
    "a function that removes duplicate lines from a file, keeping the order",
    "a producer-consumer queue with a bounded buffer",
    "a function that computes the edit distance between two words",
    "a parser for simple arithmetic like '3 + 4 * (2 - 1)'",
    "a function that masks all but the last four digits of a card number",
    "code that watches a log file and prints new lines as they arrive",
    "an LRU cache with a fixed capacity",
    "a function that converts a hex colour like #ff8800 to RGB",
    "a unit test for a function that adds business days to a date",
    "a function that generates all permutations of a string",
    "a debounce helper for a search box",
    "a function that finds the median of two sorted arrays",
    "code that hashes a file with SHA-256 in chunks",
    "a function that pretty-prints a table from a list of rows",
    "a trie for autocomplete over a list of words",
    "a function that checks whether a Sudoku board is valid",
    "code that sends a POST request with a JSON body and handles a timeout",
    "a function that groups log lines by their error code",
    "a min-heap with push and pop",
    "a function that checks whether brackets in an expression are balanced",
    "a function that converts a snake_case string to camelCase",
    "code that reads environment variables with defaults into a config object",
    "a function that computes a moving average over a stream of numbers",
    "Dijkstra's shortest path on a small weighted graph",
    "a function that validates an IPv4 address without a regex",
    "a function that shuffles a list fairly (Fisher-Yates)",
    "a function that finds all pairs in an array that sum to a target",
    "code that paginates through an API that returns a next-page token",
    "a function that truncates text to n characters on a word boundary",
    "a matrix multiplication function with a check on the shapes",
    "a function that returns the day of the week for any date",
)

FORMS = (
    "Write {task} in {lang}",
    "Can you show me {task} in {lang}?",
    "How would I write {task} in {lang}",
    "I need {task}, in {lang} please",
    "{lang}: {task}. Explain the tricky parts",
)


def coding_requests(count: int = 300) -> list[str]:
    """`count` distinct coding requests (at most 300): each task in five languages, each of
    those with its own phrasing."""
    out = []
    for n, task in enumerate(TASKS):
        for k in range(5):
            lang = LANGUAGES[(n + 3 * k) % len(LANGUAGES)]
            out.append(FORMS[(n + k) % len(FORMS)].format(task=task, lang=lang))
    assert len(set(out)) == len(out)
    return out[:count]
