#!/bin/bash
hpcstate_no_such_command_xyz
