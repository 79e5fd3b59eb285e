"""The self-report helper the generated batch script runs on the compute node (pure data).

It is a Perl program, passed to ``perl -e`` by the batch script, that uses only Perl's
built-ins and the ``Config`` module (both in Debian's and Ubuntu's essential
``perl-base``, and in RHEL's ``perl-interpreter``/``perl-libs``; no ``POSIX``, which RHEL
ships apart). Why Perl and not ``python3``: ``perl-base`` is on every Debian and Ubuntu
node by policy and Perl is on nearly every RHEL-family HPC node, while ``python3`` is
missing from minimal installs (RHEL 8 has only ``platform-python`` there); Perl also
starts in a few milliseconds.

What it does, in order:

1. Restores ``PERL5OPT``, ``PERL5LIB`` and ``PERLLIB`` for the payload (the batch script
   unsets them so that a user's Perl settings cannot break the helper; its first three
   arguments carry them: empty = unset, ``=value`` = set to value).
2. Installs a handler that forwards HUP, INT, QUIT, USR1, USR2, ALRM, CONT, XCPU, WINCH
   and PWR to the payload, and one that only outlives TERM (see ``FORWARDED_SIGNALS``).
   A signal the job started with ignored stays ignored, for the payload too.
3. Forks; the child resets those signals to their default action and execs the payload
   (PATH search as ``sh`` does; a file without ``#!`` is run by ``/bin/sh`` as ``sh``
   does; not found: 127, not executable: 126). The payload is the helper's only child,
   in the job's process group, with the job's stdin, stdout and stderr.
4. Waits for it with ``waitpid`` (retried on EINTR, so forwarded signals do not end the
   wait) and reads its wait status: an exit code, or a signal and the core flag.
5. Writes the self-report (``HPCSTATE_REPORT_FILE``, ``{array_index}`` replaced) as the
   JSON of ``hpcstate.runtime.SelfReport``: temp file in the same directory, then
   ``rename``. A path that exists and is not a regular file is left alone; a failure is
   one line on stderr. Neither changes how the helper ends.
6. Ends as the payload did: with the same exit code, or by the same signal (its
   disposition reset to default, the signal unblocked, the helper made non-dumpable with
   ``prctl(PR_SET_DUMPABLE, 0)`` so that it leaves no core file of its own beside the
   payload's), so that slurmstepd, slurmctld and accounting record what they record for
   a payload run with ``exec``.
"""

from __future__ import annotations

from typing import Final

#: The detail every report the helper writes carries: says which path ran.
HELPER_DETAIL: Final = (
    "written by hpcstate's perl helper in the batch script, from the payload's wait status"
)

#: Signals the helper passes on to the payload: what a signal sent to the batch shell
#: alone (``--signal=B:...``, ``scancel -b -s ...``) may be. Not TERM: Slurm's cancel,
#: time limit, preemption and requeue send SIGCONT and SIGTERM to EVERY process of the
#: job, the payload included, and the helper cannot tell that delivery from one to it
#: alone; a forwarded copy would be a second SIGTERM for a payload that handles it (a
#: checkpoint at the time limit). The helper ignores a TERM it gets, and waits.
FORWARDED_SIGNALS: Final = (
    "HUP",
    "INT",
    "QUIT",
    "USR1",
    "USR2",
    "ALRM",
    "CONT",
    "XCPU",
    "WINCH",
    "PWR",
)
#: Signals the helper catches only to outlive them (the payload gets its own copy).
HELD_SIGNALS: Final = ("TERM",)

# prctl's syscall number per machine (the first part of Perl's archname).
_PRCTL_NUMBERS: Final = {
    "x86_64": 157,
    "aarch64": 167,
    "riscv64": 167,
    "loongarch64": 167,
    "powerpc64le": 171,
    "powerpc64": 171,
    "ppc64le": 171,
    "ppc64": 171,
    "s390x": 172,
    "i386": 172,
    "i486": 172,
    "i586": 172,
    "i686": 172,
}

_SOURCE: Final = r"""
my @restore = splice(@ARGV, 0, 3);
for my $name (qw(PERL5OPT PERL5LIB PERLLIB)) {
  my $value = shift @restore;
  if (defined $value && length $value) { $ENV{$name} = substr($value, 1) }
  else { delete $ENV{$name} }
}
my @argv = @ARGV;
die "hpcstate helper: no command to run\n" unless @argv;
require Config;
my @sig_names = split ' ', $Config::Config{sig_name};
my %sig_numbers;
for my $i (reverse 0 .. $#sig_names) { $sig_numbers{$sig_names[$i]} = $i }
my $helper = $$;
my $child;
my @early;
my %forwards = map { $_ => 1 } (@@SIGNALS@@);
my @caught = grep { exists $sig_numbers{$_} } (keys %forwards, @@HELD@@);
# a signal the job started with ignored stays ignored, for the payload too
@caught = grep { !(defined $SIG{$_} && $SIG{$_} eq 'IGNORE') } @caught;
my $chld_ignored = defined $SIG{CHLD} && $SIG{CHLD} eq 'IGNORE';
sub forward {
  my ($name) = @_;
  if ($$ != $helper) { $SIG{$name} = 'DEFAULT'; kill $name, $$; return }
  return unless $forwards{$name};
  # before the fork returned: passed on right after it; after the payload was reaped
  # (its pid may be someone else's by now): dropped
  if (!defined $child) { push @early, $name } elsif ($child > 0) { kill $name, $child }
}
$SIG{$_} = \&forward for @caught;
$SIG{CHLD} = 'DEFAULT';
sub run_payload {
  $SIG{$_} = 'DEFAULT' for @caught;
  $SIG{CHLD} = 'IGNORE' if $chld_ignored;
  { no warnings; exec { $argv[0] } @argv; }
  my $errno = $! + 0;
  my $why = "$!";
  if ($errno == 8) { no warnings; exec { '/bin/sh' } '/bin/sh', @argv; }
  print STDERR "hpcstate: $argv[0]: $why\n";
  exit($errno == 2 ? 127 : 126);
}
$child = fork;
if (!defined $child) {
  print STDERR "hpcstate: fork failed ($!); the payload runs without the helper, no self-report\n";
  run_payload();
}
run_payload() if $child == 0;
kill $_, $child for @early;
@early = ();
my $status;
while (1) {
  my $done = waitpid($child, 0);
  if ($done == $child) { $status = $?; $child = -1; last }
  next if $done == -1 && ($! + 0) == 4;
  print STDERR "hpcstate: waitpid failed ($!); the payload's end is unknown\n";
  $status = 127 << 8;
  last;
}
my ($code, $signal, $core) = (undef, undef, 0);
if ($status & 127) { $signal = $status & 127; $core = ($status & 128) ? 1 : 0 }
else { $code = $status >> 8 }
sub json_string {
  my ($text) = @_;
  $text =~ s/(["\\])/\\$1/g;
  $text =~ s/([\x00-\x1f\x7f])/sprintf('\\u%04x', ord $1)/ge;
  return qq("$text");
}
my $template = $ENV{HPCSTATE_REPORT_FILE};
my $run_id = $ENV{HPCSTATE_RUN_ID};
if (defined $template && length $template && defined $run_id && length $run_id) {
  my $index;
  for my $name (qw(HPCSTATE_ARRAY_INDEX SLURM_ARRAY_TASK_ID JOB_COMPLETION_INDEX)) {
    my $value = $ENV{$name};
    next unless defined $value && $value =~ /\A\s*([0-9]+)\s*\z/;
    $index = $1;
    $index =~ s/\A0+(?=[0-9])//;
    last;
  }
  my $file = $template;
  my $replace = defined $index ? $index : '';
  $file =~ s/\{array_index\}/$replace/g;
  my @now = gmtime;
  my $doc = '{"schema": 1, "run_id": ' . json_string($run_id)
    . ', "item_id": ' . json_string(defined $ENV{HPCSTATE_ITEM_ID} ? $ENV{HPCSTATE_ITEM_ID} : '')
    . ', "array_index": ' . (defined $index ? $index : 'null')
    . ', "exit": {"code": ' . (defined $code ? $code : 'null')
    . ', "signal": ' . (defined $signal ? $signal : 'null')
    . ', "core_dumped": ' . ($core ? 'true' : 'false') . ', "ambiguous": null}'
    . ', "reported_at": '
    . sprintf('"%04d-%02d-%02dT%02d:%02d:%02dZ"', $now[5] + 1900, $now[4] + 1, @now[3, 2, 1, 0])
    . ', "detail": ' . json_string(@@DETAIL@@) . "}\n";
  my ($dir, $base) = $file =~ m{\A(.*)/([^/]*)\z} ? ($1, $2) : ('.', $file);
  $dir = '/' if $dir eq '' && $file =~ m{\A/};
  if (-e $file && !-f _) {
    print STDERR "hpcstate: $file is not a regular file; no self-report written\n";
  } else {
    my $path = $dir =~ m{\A/} ? '' : '.';
    for my $part (split m{/}, $dir) {
      next if $part eq '';
      $path .= "/$part";
      mkdir $path unless -d $path;
    }
    my $tmp = "$dir/.$base.$$.tmp";
    my $fh;
    unless (open($fh, '>', $tmp) && (print {$fh} $doc) && close($fh) && rename($tmp, $file)) {
      my $why = "$!";
      unlink $tmp;
      print STDERR "hpcstate: could not write the self-report $file: $why\n";
    }
  }
}
$SIG{$_} = 'DEFAULT' for @caught;
if (defined $signal) {
  my $name = $sig_names[$signal];
  $SIG{$name} = 'DEFAULT' if defined $name && $name ne 'ZERO';
  my ($machine) = split /-/, $Config::Config{archname};
  my %prctl = (@@PRCTL@@);
  { no warnings; syscall($prctl{$machine}, 4, 0) if exists $prctl{$machine}; }
  eval { require POSIX; POSIX::sigprocmask(POSIX::SIG_UNBLOCK(), POSIX::SigSet->new($signal)); };
  kill $signal, $$;
  exit(128 + $signal);
}
exit $code;
"""


def perl_helper() -> str:
    """The helper's source for ``perl -e``: comments and indentation are gone, the
    signal list, syscall table and detail filled in (no single quotes are needed in
    the shell word, ``shlex.quote`` handles the ones there are)."""
    signals = ", ".join(f"'{name}'" for name in FORWARDED_SIGNALS)
    held = ", ".join(f"'{name}'" for name in HELD_SIGNALS)
    prctl = ", ".join(f"'{machine}' => {number}" for machine, number in _PRCTL_NUMBERS.items())
    detail = "'" + HELPER_DETAIL.replace("\\", "\\\\").replace("'", "\\'") + "'"
    text = (
        _SOURCE.replace("@@SIGNALS@@", signals)
        .replace("@@HELD@@", held)
        .replace("@@PRCTL@@", prctl)
        .replace("@@DETAIL@@", detail)
    )
    lines = (line.strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#"))


#: The rendered helper, once.
PERL_HELPER: Final = perl_helper()
