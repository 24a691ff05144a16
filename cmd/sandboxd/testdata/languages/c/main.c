#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
	char line[256];
	if (!fgets(line, sizeof line, stdin))
		return 1;
	line[strcspn(line, "\n")] = 0;
	printf("in: %s\n", line);
	for (int i = 1; i < argc; i++)
		printf("arg: %s\n", argv[i]);
	puts("héllo wörld ✓");
	return 3;
}
