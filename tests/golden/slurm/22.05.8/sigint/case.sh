#!/bin/bash
kill -INT $$
