#include <iostream>
#include <string>

int main(int argc, char **argv) {
	std::string line;
	std::getline(std::cin, line);
	std::cout << "in: " << line << "\n";
	for (int i = 1; i < argc; i++)
		std::cout << "arg: " << argv[i] << "\n";
	std::cout << "héllo wörld ✓\n";
	return 3;
}
