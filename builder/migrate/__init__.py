"""Moving OS trees and guests between hosts over ssh."""
