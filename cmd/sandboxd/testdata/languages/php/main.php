<?php
$line = rtrim(fgets(STDIN), "\n");
echo "in: $line\n";
foreach (array_slice($argv, 1) as $a) {
    echo "arg: $a\n";
}
echo "héllo wörld ✓\n";
exit(3);
